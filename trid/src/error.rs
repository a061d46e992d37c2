//! Why a transport ID was refused: each message names the key or token at
//! fault, says what to write instead, and shows the syntax in the spelling
//! the user typed (nvme-perf's `-r` or a fio filename).

#![forbid(unsafe_code)]

use crate::syntax::Syntax;

/// Why a transport ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportIdError {
    /// A token without a separator.
    #[error(
        "{} '{input}': '{token}' is not a {} pair; {}{}",
        .syntax.what(), .syntax.kv("key", "value"), .syntax.help(), .syntax.not_a_controller_hint()
    )]
    NotAPair {
        /// The whole ID.
        input: String,
        /// The bad token.
        token: String,
        /// How it was written.
        syntax: Syntax,
    },
    /// No trtype key.
    #[error(
        "{} '{input}' has no trtype key: trtype must be PCIe, emu, nvme-io_uring or TCP; {}{}",
        .syntax.what(), .syntax.help(), .syntax.not_a_controller_hint()
    )]
    MissingType {
        /// The whole ID.
        input: String,
        /// How it was written.
        syntax: Syntax,
    },
    /// A trtype no tool here knows.
    #[error(
        "unknown transport type '{trtype}' in {} '{input}': trtype must be PCIe, emu, nvme-io_uring or TCP; {}{}",
        .syntax.what(), .syntax.help(), .syntax.not_a_controller_hint()
    )]
    UnknownType {
        /// The whole ID.
        input: String,
        /// The trtype value.
        trtype: String,
        /// How it was written.
        syntax: Syntax,
    },
    /// A key the transport type does not take.
    #[error(
        "{} '{input}': unknown key '{key}' for trtype {trtype} (keys: {valid}); {}",
        .syntax.what(), .syntax.help()
    )]
    UnknownKey {
        /// The whole ID.
        input: String,
        /// The key.
        key: String,
        /// The transport type.
        trtype: &'static str,
        /// Keys this type accepts.
        valid: &'static str,
        /// How it was written.
        syntax: Syntax,
    },
    /// A key given twice.
    #[error(
        "{} '{input}': key '{key}' is given twice; {}",
        .syntax.what(), .syntax.help()
    )]
    Duplicate {
        /// The whole ID.
        input: String,
        /// The key.
        key: String,
        /// How it was written.
        syntax: Syntax,
    },
    /// A required key is missing.
    #[error(
        "{} '{input}': trtype {trtype} needs the key '{key}', e.g. {example}; {}",
        .syntax.what(), .syntax.help()
    )]
    MissingKey {
        /// The whole ID.
        input: String,
        /// The transport type.
        trtype: &'static str,
        /// The key.
        key: &'static str,
        /// The key with a value, as the user would write it.
        example: String,
        /// How it was written.
        syntax: Syntax,
    },
    /// A value that does not fit its key.
    #[error(
        "{} '{input}': bad value '{value}' for key '{key}': {hint}; {}",
        .syntax.what(), .syntax.help()
    )]
    BadValue {
        /// The whole ID.
        input: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is expected.
        hint: String,
        /// How it was written.
        syntax: Syntax,
    },
}
