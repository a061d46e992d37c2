//! identify: print controller and namespace data the way `nvme id-ctrl`
//! and `nvme id-ns` users expect.
//!
//! Usage: `identify [-r TRANSPORT_ID]` (without -r: the built-in emulated controller).

use anyhow::Result;
use clap::Parser;
use nvme_engine::spec::identify::{IdentifyController, IdentifyNamespace};
use nvme_engine_examples::{DeviceArgs, Example, Handle, Setup, run};
use nvme_reactor::Attach;

struct Identify;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn print_controller(id: &IdentifyController) {
    println!("NVME Identify Controller:");
    println!("vid       : {:#x}", id.vid.get());
    println!("ssvid     : {:#x}", id.ssvid.get());
    println!("sn        : {}", id.serial());
    println!("mn        : {}", id.model());
    println!("fr        : {}", id.firmware());
    println!("rab       : {}", id.rab);
    println!(
        "ieee      : {:02x}{:02x}{:02x}",
        id.ieee[2], id.ieee[1], id.ieee[0]
    );
    println!("cmic      : {:#x}", id.cmic);
    println!("mdts      : {}", id.mdts);
    println!("cntlid    : {:#x}", id.cntlid.get());
    let ver = id.ver.get();
    println!(
        "ver       : {:#x} ({}.{}.{})",
        ver,
        ver >> 16,
        (ver >> 8) & 0xff,
        ver & 0xff
    );
    println!("oacs      : {:#x}", id.oacs.get());
    println!("acl       : {}", id.acl);
    println!("aerl      : {}", id.aerl);
    println!("frmw      : {:#x}", id.frmw);
    println!("lpa       : {:#x}", id.lpa);
    println!("elpe      : {}", id.elpe);
    println!("npss      : {}", id.npss);
    println!("wctemp    : {}", id.wctemp.get());
    println!("cctemp    : {}", id.cctemp.get());
    println!(
        "sqes      : {:#x} (min {} max {} bytes)",
        id.sqes,
        1u32 << (id.sqes & 0xf),
        1u32 << (id.sqes >> 4)
    );
    println!(
        "cqes      : {:#x} (min {} max {} bytes)",
        id.cqes,
        1u32 << (id.cqes & 0xf),
        1u32 << (id.cqes >> 4)
    );
    println!("maxcmd    : {}", id.maxcmd.get());
    println!("nn        : {}", id.nn.get());
    println!("oncs      : {:#x}", id.oncs.get());
    println!("fuses     : {:#x}", id.fuses.get());
    println!("fna       : {:#x}", id.fna);
    println!("vwc       : {:#x}", id.vwc);
    println!("awun      : {}", id.awun.get());
    println!("awupf     : {}", id.awupf.get());
    println!("sgls      : {:#x}", id.sgls.get());
    let nqn = nvme_engine::spec::identify::ascii_field(&id.subnqn);
    println!("subnqn    : {}", nqn.trim_end_matches('?'));
}

fn print_namespace(nsid: u32, id: &IdentifyNamespace) {
    println!();
    println!("NVME Identify Namespace {nsid}:");
    println!("nsze    : {:#x}", id.nsze.get());
    println!("ncap    : {:#x}", id.ncap.get());
    println!("nuse    : {:#x}", id.nuse.get());
    println!("nsfeat  : {:#x}", id.nsfeat);
    println!("nlbaf   : {}", id.nlbaf);
    println!("flbas   : {:#x}", id.flbas);
    println!("mc      : {:#x}", id.mc);
    println!("dpc     : {:#x}", id.dpc);
    println!("dps     : {:#x}", id.dps);
    println!("nmic    : {:#x}", id.nmic);
    println!("nsattr  : {:#x}", id.nsattr);
    println!("nguid   : {}", hex(&id.nguid));
    println!("eui64   : {}", hex(&id.eui64));
    let in_use = id.format_index();
    let count = (id.nlbaf as usize + 1).min(id.lbaf.len());
    for (i, f) in id.lbaf.iter().take(count).enumerate() {
        println!(
            "lbaf {i:>2} : ms:{:<3} lbads:{:<2} rp:{:#x}{}",
            f.ms(),
            f.lbads(),
            f.rp(),
            if i == in_use { " (in use)" } else { "" }
        );
    }
}

impl Example for Identify {
    /// This thread, polling the admin queue.
    fn busy_threads(&self) -> usize {
        1
    }

    fn run<A: Attach>(self, controller: A::Handle, setup: &Setup) -> Result<()>
    where
        A::Handle: Handle,
    {
        for line in controller.transport_lines() {
            println!("{line}");
        }
        println!();
        print_controller(controller.identify());
        // ns:N prints that namespace only.
        for ns in &controller.namespaces() {
            if setup.nsid.is_none_or(|n| n == ns.id()) {
                print_namespace(ns.id(), ns.identify());
            }
        }
        for skipped in controller.skipped() {
            println!();
            println!("{skipped}");
        }
        Ok(())
    }
}

#[derive(Parser)]
#[command(
    about = "Print a controller's and its namespaces' Identify data, laid out like nvme id-ctrl / id-ns."
)]
struct Args {
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    run(&args.device, Identify)
}
