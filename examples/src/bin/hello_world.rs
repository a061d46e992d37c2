//! hello_world: write a block, read it back and compare, through a reactor.
//!
//! Usage: `hello_world [-r TRANSPORT_ID]` (without -r: the built-in emulated controller).
//! On a real device this overwrites the first 4 KiB of namespace 1.

use anyhow::{Context, Result, bail};
use clap::Parser;
use nvme_engine_examples::{DeviceArgs, Example, Handle, Setup, run};
use nvme_reactor::{Attach, CoreSpec, Producer, ReactorConfig, ReactorSet, Request, Response};

struct Hello;

fn wait_one(p: &mut Producer) -> Response {
    loop {
        let mut got = None;
        p.poll_completions(|r| got = Some(r));
        if let Some(r) = got {
            return r;
        }
        std::hint::spin_loop();
    }
}

impl Example for Hello {
    /// This thread (waiting for each completion) and the reactor.
    fn busy_threads(&self) -> usize {
        2
    }

    fn run<A: Attach>(self, controller: A::Handle, setup: &Setup) -> Result<()>
    where
        A::Handle: Handle,
    {
        let ns = setup.namespace(&controller)?;
        let (nsid, block) = (ns.id(), ns.block_size() as usize);
        let len = block.max(4096);
        println!(
            "controller: {} ({}), namespace {nsid}: {} blocks of {block} bytes",
            controller.identify().model(),
            controller.identify().serial(),
            ns.blocks()
        );

        let core = setup.plan.threads[1];
        let mut config = ReactorConfig::default();
        config.cores = CoreSpec::from_cores([core]);
        config.idle_yield = setup.plan.shared;
        let set = ReactorSet::<A>::start_with(config, vec![controller])?;
        println!("reactor started on core {core}");
        let mut p = set.producer(0)?;

        let message = b"Hello, world! Written by nvme-engine through a reactor.";
        let mut out = p.alloc(len)?;
        out.fill(0);
        out.write_at(0, message);
        p.try_submit(Request::write(0, nsid, 0, out, true, 1))
            .map_err(|r| anyhow::anyhow!("{}", r.reason))?;
        let w = wait_one(&mut p);
        w.result.context("write failed")?;
        println!("wrote {len} bytes at LBA 0 (FUA)");

        let mut back = p.alloc(len)?;
        back.fill(0xff);
        p.try_submit(Request::read(0, nsid, 0, back, 2))
            .map_err(|r| anyhow::anyhow!("{}", r.reason))?;
        let r = wait_one(&mut p);
        r.result.context("read failed")?;
        let back = r.buf.context("read buffer not returned")?;
        let written = w.buf.context("write buffer not returned")?;
        println!("read {len} bytes back from LBA 0");
        if back.to_vec() != written.to_vec() {
            bail!("data mismatch: the block read back differs from the block written");
        }
        let mut text = vec![0; message.len()];
        back.read_at(0, &mut text);
        println!(
            "compare: identical — \"{}\"",
            String::from_utf8_lossy(&text)
        );
        p.free(back)?;
        p.free(written)?;

        let report = set.shutdown();
        print!("{report}");
        if !report.is_clean() {
            bail!("shutdown reported problems");
        }
        Ok(())
    }
}

#[derive(Parser)]
#[command(about = "Write a block through a reactor, read it back and compare.")]
struct Args {
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    run(&args.device, Hello)
}
