//! `spdk_nvme_perf` options nvme-perf does not implement. Each is still
//! recognised, with its SPDK letter and long name, so a command line copied
//! from SPDK fails with a message naming what to use instead rather than
//! "unexpected argument" (or, worse, runs with a letter that means
//! something else here).

#![forbid(unsafe_code)]

use clap::Args;

const FABRICS: &str = "NVMe over Fabrics is not supported: nvme-perf drives PCIe controllers \
(-r 'trtype:PCIe traddr:...') and the built-in emulated controller (-r trtype:emu)";

/// Options accepted only to be refused (hidden from `--help`).
#[derive(Debug, Default, Args)]
pub struct Unsupported {
    #[arg(short = 'U', long = "num-unused-qpairs", hide = true)]
    unused_qpairs: Option<String>,
    #[arg(short = 's', long = "hugemem-size", hide = true)]
    hugemem: Option<String>,
    #[arg(short = 'g', long = "mem-single-seg", hide = true)]
    single_seg: bool,
    #[arg(short = 'i', long = "shmem-grp-id", hide = true)]
    shmem: Option<String>,
    #[arg(short = 'e', long = "metadata", hide = true)]
    metadata: Option<String>,
    #[arg(short = 'V', long = "enable-vmd", hide = true)]
    vmd: bool,
    #[arg(short = 'D', long = "disable-sq-cmb", hide = true)]
    sq_cmb: bool,
    #[arg(short = 'l', long = "enable-ssd-latency-tracking", hide = true)]
    ssd_latency: bool,
    #[arg(short = 'T', long = "logflag", hide = true)]
    logflag: Option<String>,
    #[arg(short = 'G', long = "enable-debug", hide = true)]
    debug: bool,
    #[arg(long = "iova-mode", hide = true)]
    iova_mode: Option<String>,
    #[arg(long = "no-huge", hide = true)]
    no_huge: bool,
    #[arg(short = 'S', long = "default-sock-impl", hide = true)]
    sock_impl: Option<String>,
    #[arg(short = 'z', long = "disable-zcopy", hide = true)]
    disable_zcopy: Option<String>,
    #[arg(short = 'Z', long = "enable-zcopy", hide = true)]
    enable_zcopy: Option<String>,
    #[arg(short = 'k', long = "keepalive", hide = true)]
    keepalive: Option<String>,
    #[arg(short = 'H', long = "enable-tcp-hdgst", hide = true)]
    hdgst: bool,
    #[arg(short = 'I', long = "enable-tcp-ddgst", hide = true)]
    ddgst: bool,
    #[arg(long = "transport-tos", hide = true)]
    tos: Option<String>,
    #[arg(long = "rdma-srq-size", hide = true)]
    srq: Option<String>,
    #[arg(long = "psk-path", hide = true)]
    psk_path: Option<String>,
    #[arg(long = "psk-identity", hide = true)]
    psk_identity: Option<String>,
    #[arg(long = "tls-version", hide = true)]
    tls_version: Option<String>,
    #[arg(long = "enable-ktls", hide = true)]
    enable_ktls: bool,
    #[arg(long = "disable-ktls", hide = true)]
    disable_ktls: bool,
    #[arg(long = "zerocopy-threshold", hide = true)]
    zc_threshold: Option<String>,
    #[arg(long = "zerocopy-threshold-sock-impl", hide = true)]
    zc_impl: Option<String>,
}

impl Unsupported {
    /// `-e`: end-to-end protection information, parsed and checked by
    /// `protection.rs` (listed here with SPDK's other letters).
    pub fn metadata(&self) -> Option<&str> {
        self.metadata.as_deref()
    }

    /// The first unsupported option given, as `(option, what to do instead)`.
    pub fn first(&self) -> Option<(&'static str, &'static str)> {
        let checks: [(bool, &'static str, &'static str); 25] = [
            (
                self.unused_qpairs.is_some(),
                "-U/--num-unused-qpairs",
                "nvme-perf creates only the queue pairs it drives; use -P to drive more per namespace",
            ),
            (
                self.hugemem.is_some(),
                "-s/--hugemem-size",
                "nvme-perf sizes its DMA memory itself; reserve hugepages with scripts/setup.sh (HUGEMEM=<MB>)",
            ),
            (
                self.single_seg,
                "-g/--mem-single-seg",
                "there are no DPDK memory segments here; drop it",
            ),
            (
                self.shmem.is_some(),
                "-i/--shmem-grp-id",
                "nvme-perf shares no memory with other processes; drop it",
            ),
            (
                self.vmd,
                "-V/--enable-vmd",
                "VMD is not supported; disable VMD for the ports in firmware so the controllers appear as PCIe functions (nvme-perf --version prints the version)",
            ),
            (
                self.sq_cmb,
                "-D/--disable-sq-cmb",
                "the engine never places submission queues in the controller memory buffer; drop it",
            ),
            (
                self.ssd_latency,
                "-l/--enable-ssd-latency-tracking",
                "vendor latency log pages are not read; use -L (software latency tracking, -LL with a histogram)",
            ),
            (
                self.logflag.is_some(),
                "-T/--logflag",
                "nvme-perf has no log flags: errors are always printed; use --transport-stats for queue-pair counters",
            ),
            (
                self.debug,
                "-G/--enable-debug",
                "nvme-perf has no debug log; use --transport-stats for queue-pair counters",
            ),
            (
                self.iova_mode.is_some(),
                "--iova-mode",
                "the engine chooses IOVAs itself (VFIO maps buffers; uio uses physical addresses); drop it",
            ),
            (
                self.no_huge,
                "--no-huge",
                "the engine falls back to ordinary memory on its own when no hugepages are free; drop it",
            ),
            (self.sock_impl.is_some(), "-S/--default-sock-impl", FABRICS),
            (self.disable_zcopy.is_some(), "-z/--disable-zcopy", FABRICS),
            (self.enable_zcopy.is_some(), "-Z/--enable-zcopy", FABRICS),
            (self.keepalive.is_some(), "-k/--keepalive", FABRICS),
            (self.hdgst, "-H/--enable-tcp-hdgst", FABRICS),
            (self.ddgst, "-I/--enable-tcp-ddgst", FABRICS),
            (self.tos.is_some(), "--transport-tos", FABRICS),
            (self.srq.is_some(), "--rdma-srq-size", FABRICS),
            (self.psk_path.is_some(), "--psk-path", FABRICS),
            (self.psk_identity.is_some(), "--psk-identity", FABRICS),
            (self.tls_version.is_some(), "--tls-version", FABRICS),
            (
                self.enable_ktls || self.disable_ktls,
                "--enable-ktls/--disable-ktls",
                FABRICS,
            ),
            (self.zc_threshold.is_some(), "--zerocopy-threshold", FABRICS),
            (
                self.zc_impl.is_some(),
                "--zerocopy-threshold-sock-impl",
                FABRICS,
            ),
        ];
        checks
            .into_iter()
            .find(|c| c.0)
            .map(|(_, opt, instead)| (opt, instead))
    }
}
