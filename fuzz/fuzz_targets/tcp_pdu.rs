//! The NVMe/TCP PDU decoder and the host's receive state machine on
//! arbitrary bytes from a target: never a panic, every length kept in
//! bounds. Byte 0 picks the digests, byte 1 how the rest is split into
//! reads (the machine must not care).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nvme_engine::spec::completion::Completion;
use nvme_engine::tcp::pdu::{DataHeader, Digests, IcResp, R2t, decode_pdu};
use nvme_engine::tcp::rx::{RxError, RxMachine, RxSink};

/// Accepts everything and checks that data stays inside the announced PDU.
struct Sink {
    window: Option<(u32, u32)>,
}

impl RxSink for Sink {
    fn ic_resp(&mut self, _: IcResp) -> Result<(), RxError> {
        Ok(())
    }
    fn response(&mut self, _: Completion) -> Result<(), RxError> {
        Ok(())
    }
    fn r2t(&mut self, _: R2t) -> Result<(), RxError> {
        Ok(())
    }
    fn c2h_begin(&mut self, d: &DataHeader) -> Result<(), RxError> {
        self.window = Some((d.offset, d.offset + d.len));
        Ok(())
    }
    fn c2h_data(&mut self, _: u16, offset: u32, bytes: &[u8]) {
        let (lo, hi) = self.window.expect("data without a C2HData header");
        assert!(offset >= lo && offset as u64 + bytes.len() as u64 <= hi as u64);
    }
    fn c2h_end(&mut self, _: &DataHeader, _: bool) {
        self.window = None;
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, split, rest @ ..] = data else { return };
    let digests = Digests::from_byte(*mode);
    let _ = decode_pdu(rest, digests, 1 << 16);
    let mut m = RxMachine::new(1 << 16);
    let mut sink = Sink { window: None };
    let chunk = (*split as usize).max(1);
    for c in rest.chunks(chunk) {
        if m.feed(c, &mut sink).is_err() {
            break;
        }
    }
});
