//! The spellings of a transport ID: how pairs are written and separated,
//! what the text is called in messages, and the help shown with every
//! error. One set of keys and checks serves them all (see [`crate::parse`]).

#![forbid(unsafe_code)]

/// How a transport ID is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// A command-line argument as SPDK's tools take it (`nvme-perf -r`):
    /// `key:value` pairs (`key=value` works too) separated by whitespace or
    /// commas. On `trtype:emu`, `ns:` is the namespace count.
    Cli,
    /// A fio filename, as SPDK's fio plugin spells it (fio splits filenames
    /// at ':', so none may appear): `key=value` pairs separated by
    /// whitespace, '.' in place of ':' in PCI addresses (`0000.04.00.0`).
    /// `ns=` always selects the namespace; `namespaces=` is the emulated
    /// controller's count.
    FioFilename,
}

const CLI_HELP: &str = "valid syntax: -r 'trtype:PCIe traddr:0000:04:00.0 [ns:1] [noiommu:1] [shadow:0]' or \
-r 'trtype:nvme-io_uring path:/dev/ng0n1 [poll:1] [fixed:1]' or \
-r 'trtype:TCP [adrfam:IPv4] traddr:127.0.0.1 [trsvcid:4420] subnqn:<nqn> [hostnqn:<nqn>] [hdgst:1] [ddgst:1] [ns:1]' \
(subnqn:nqn.2014-08.org.nvmexpress.discovery lists what the portal offers) or \
-r 'trtype:emu [size:1G] [ns:<count>] [lba:512|4096] [null:1] [file:/path] [mode:threaded|inline] [idle:spin|backoff] [core:<cpu>] [shadow:0] [<fault>:<fraction of I/O>] [rounds:<n>] [recover:1] [sticky:1]' \
(faults: fail status lose delay dup unknowncid stale sqhd fatal vanish)";

const FIO_HELP: &str = "valid filenames: 'trtype=PCIe traddr=0000.04.00.0 ns=1 [noiommu=1] [shadow=0]' or \
'trtype=emu [size=64M] [ns=1] [namespaces=N] [lba=512|4096] [null=1] [file=/path] \
[mode=threaded|inline] [idle=spin|backoff] [core=N] [shadow=0] [<fault>=<fraction of I/O>] [rounds=<n>] [recover=1] [sticky=1]' \
(faults: fail status lose delay dup unknowncid stale sqhd fatal vanish)";

impl Syntax {
    /// What the text is called in messages.
    pub fn what(self) -> &'static str {
        match self {
            Syntax::Cli => "transport ID",
            Syntax::FioFilename => "filename",
        }
    }

    /// The accepted syntax, shown with every error.
    pub fn help(self) -> &'static str {
        match self {
            Syntax::Cli => CLI_HELP,
            Syntax::FioFilename => FIO_HELP,
        }
    }

    /// `key:value` or `key=value`: how this spelling writes one pair.
    pub fn kv(self, key: &str, value: &str) -> String {
        format!("{key}{}{value}", self.separator())
    }

    /// The separator this spelling documents between key and value (both
    /// ':' and '=' are read).
    pub fn separator(self) -> char {
        match self {
            Syntax::Cli => ':',
            Syntax::FioFilename => '=',
        }
    }

    /// Whether commas separate pairs (not in fio filenames, where a file
    /// path may hold one).
    pub(crate) fn splits_on_comma(self) -> bool {
        self == Syntax::Cli
    }

    /// Whether `ns` on `trtype:emu` is the namespace count (nvme-perf's
    /// meaning) rather than the namespace to use.
    pub(crate) fn ns_counts_emu_namespaces(self) -> bool {
        self == Syntax::Cli
    }

    /// A PCI address as this spelling writes it.
    pub(crate) fn pci_example(self) -> &'static str {
        match self {
            Syntax::Cli => "0000:04:00.0",
            Syntax::FioFilename => "0000.04.00.0",
        }
    }

    /// What a bad `traddr` gets told.
    pub(crate) fn traddr_hint(self) -> &'static str {
        match self {
            Syntax::Cli => "expected a PCI address like 0000:04:00.0 (lspci -D)",
            Syntax::FioFilename => {
                "expected a PCI address with '.' for ':', e.g. 0000.04.00.0 (lspci -D prints 0000:04:00.0)"
            }
        }
    }

    /// Added to the errors of text that names no controller at all.
    pub(crate) fn not_a_controller_hint(self) -> &'static str {
        match self {
            Syntax::Cli => "",
            Syntax::FioFilename => ". A path or device name needs one of fio's own engines",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spelling_writes_pairs_with_its_own_separator() {
        assert_eq!(Syntax::Cli.kv("ns", "1"), "ns:1");
        assert_eq!(Syntax::FioFilename.kv("ns", "1"), "ns=1");
        assert!(
            Syntax::Cli
                .help()
                .contains("-r 'trtype:PCIe traddr:0000:04:00.0")
        );
        assert!(
            Syntax::FioFilename
                .help()
                .contains("'trtype=PCIe traddr=0000.04.00.0")
        );
    }
}
