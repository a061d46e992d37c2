//! Tests of software protection information: the guard against the CRC
//! catalogue, generation and checking in every type, location and layout,
//! each failure named by block and field, and the guard's throughput
//! beside a byte-at-a-time table (printed, never asserted).

use super::*;
use crate::spec::protection::MetadataFormat;

fn format(kind: PiType, location: PiLocation, ms: u16, layout: MetadataLayout) -> MetadataFormat {
    MetadataFormat {
        size: ms,
        layout,
        pi: Some(PiFormat { kind, location }),
    }
}

const KINDS: [PiType; 3] = [PiType::Type1, PiType::Type2, PiType::Type3];
const LOCATIONS: [PiLocation; 2] = [PiLocation::First, PiLocation::Last];

/// Deterministic bytes that differ per block and position.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn guard_is_the_t10_dif_crc_of_the_catalogue() {
    // The CRC catalogue's check value for CRC-16/T10-DIF over "123456789".
    assert_eq!(guard(b"123456789", &[]), 0xd0db);
    assert_eq!(guard(b"1234", b"56789"), 0xd0db);
    assert_eq!(guard(&[0u8; 4096], &[]), 0);
    assert_ne!(guard(&[0xffu8; 512], &[]), 0);
}

#[test]
fn generated_tuples_check_in_every_type_location_and_layout() {
    for kind in KINDS {
        for loc in LOCATIONS {
            for (bs, ms) in [(512, 8), (512, 16), (4096, 8), (4096, 64)] {
                let tags = PiTags {
                    ref_tag: 0xffff_fffe, // wraps within the command
                    app_tag: 0x4242,
                    app_mask: 0xffff,
                };
                let blocks = 4;
                // Extended.
                let p =
                    Protection::new(bs, format(kind, loc, ms, MetadataLayout::Extended)).unwrap();
                let mut buf = pattern(blocks * (bs + ms as usize), 7);
                p.generate_extended(&mut buf, &tags).unwrap();
                p.check_extended(&buf, &tags, PrChk::ALL).unwrap();
                // Separate.
                let p =
                    Protection::new(bs, format(kind, loc, ms, MetadataLayout::Separate)).unwrap();
                let data = pattern(blocks * bs, 9);
                let mut meta = pattern(blocks * ms as usize, 11);
                p.generate_separate(&data, &mut meta, &tags).unwrap();
                p.check_separate(&data, &meta, &tags, PrChk::ALL).unwrap();
                // The tuple is where the format says, big-endian.
                let at = if loc == PiLocation::First {
                    0
                } else {
                    ms as usize - 8
                };
                let m1 = &meta[ms as usize..2 * ms as usize];
                assert_eq!(&m1[at + 2..at + 4], &[0x42, 0x42]);
                let want_ref: u32 = if kind == PiType::Type3 {
                    0xffff_fffe
                } else {
                    0xffff_ffff
                };
                assert_eq!(&m1[at + 4..at + 8], &want_ref.to_be_bytes());
            }
        }
    }
}

#[test]
fn each_corrupted_field_is_named_with_its_block() {
    for kind in KINDS {
        for loc in LOCATIONS {
            let p = Protection::new(512, format(kind, loc, 16, MetadataLayout::Separate)).unwrap();
            let tags = PiTags::for_lba(1000, 7);
            let data = pattern(8 * 512, 1);
            let mut meta = vec![0u8; 8 * 16];
            p.generate_separate(&data, &mut meta, &tags).unwrap();
            let at = if loc == PiLocation::First { 0 } else { 8 };

            let mut bad = data.clone();
            bad[5 * 512 + 100] ^= 0x10;
            let err = p
                .check_separate(&bad, &meta, &tags, PrChk::ALL)
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    PiError::Check {
                        block: 5,
                        field: PiField::Guard,
                        ..
                    }
                ),
                "{err}"
            );
            // Guard checking off: the same data passes.
            let no_guard = PrChk {
                guard: false,
                ..PrChk::ALL
            };
            p.check_separate(&bad, &meta, &tags, no_guard).unwrap();

            let mut m = meta.clone();
            m[3 * 16 + at + 3] ^= 1;
            let err = p.check_separate(&data, &m, &tags, PrChk::ALL).unwrap_err();
            assert_eq!(
                err,
                PiError::Check {
                    block: 3,
                    field: PiField::AppTag,
                    expected: 7,
                    found: 6
                }
            );
            // Masked-off application tag bits are not compared.
            let loose = PiTags {
                app_mask: 0xfffe,
                ..tags
            };
            p.check_separate(&data, &m, &loose, PrChk::ALL).unwrap();

            let mut m = meta.clone();
            m[6 * 16 + at + 7] ^= 0x80;
            let err = p.check_separate(&data, &m, &tags, PrChk::ALL).unwrap_err();
            let want = if kind == PiType::Type3 { 1000 } else { 1006 };
            assert_eq!(
                err,
                PiError::Check {
                    block: 6,
                    field: PiField::RefTag,
                    expected: want,
                    found: want ^ 0x80
                }
            );
            assert!(
                err.to_string()
                    .contains("reference tag check failed at block 6 of the buffer"),
                "{err}"
            );
            // Reading the blocks as if they started elsewhere fails on the
            // reference tag for types 1 and 2 only.
            let moved = PiTags::for_lba(1001, 7);
            let r = p.check_separate(&data, &meta, &moved, PrChk::ALL);
            if kind == PiType::Type3 {
                assert!(matches!(
                    r,
                    Err(PiError::Check {
                        block: 0,
                        field: PiField::RefTag,
                        ..
                    })
                ));
            } else {
                assert!(matches!(
                    r,
                    Err(PiError::Check {
                        block: 0,
                        field: PiField::RefTag,
                        expected: 1001,
                        found: 1000
                    })
                ));
            }
        }
    }
}

#[test]
fn a_last_8_bytes_guard_covers_the_metadata_before_the_tuple() {
    let tags = PiTags::for_lba(0, 0);
    for (loc, covered) in [(PiLocation::Last, true), (PiLocation::First, false)] {
        let p = Protection::new(
            512,
            format(PiType::Type1, loc, 64, MetadataLayout::Extended),
        )
        .unwrap();
        let mut buf = pattern(2 * 576, 3);
        p.generate_extended(&mut buf, &tags).unwrap();
        // A byte of the metadata outside the tuple, in block 1.
        let outside = if loc == PiLocation::Last {
            576 + 512
        } else {
            576 + 512 + 20
        };
        buf[outside] ^= 1;
        let r = p.check_extended(&buf, &tags, PrChk::ALL);
        if covered {
            assert!(matches!(
                r,
                Err(PiError::Check {
                    block: 1,
                    field: PiField::Guard,
                    ..
                })
            ));
        } else {
            assert_eq!(r, Ok(()));
        }
    }
}

#[test]
fn escape_tags_turn_checking_off_per_type() {
    let tags = PiTags::for_lba(5, 1);
    for kind in KINDS {
        let p = Protection::new(
            512,
            format(kind, PiLocation::First, 8, MetadataLayout::Separate),
        )
        .unwrap();
        let data = vec![1u8; 512];
        let mut meta = [0u8; 8];
        meta[2..4].copy_from_slice(&[0xff, 0xff]);
        let r = p.check_separate(&data, &meta, &tags, PrChk::ALL);
        if kind == PiType::Type3 {
            assert!(
                matches!(
                    r,
                    Err(PiError::Check {
                        field: PiField::Guard,
                        ..
                    })
                ),
                "type 3 escapes only with both tags all ones"
            );
            meta[4..8].copy_from_slice(&[0xff; 4]);
            assert_eq!(p.check_separate(&data, &meta, &tags, PrChk::ALL), Ok(()));
        } else {
            assert_eq!(r, Ok(()));
        }
    }
}

#[test]
fn wrong_lengths_layouts_and_formats_are_refused() {
    let ext = Protection::new(
        512,
        format(
            PiType::Type1,
            PiLocation::First,
            8,
            MetadataLayout::Extended,
        ),
    )
    .unwrap();
    let sep = Protection::new(
        512,
        format(
            PiType::Type1,
            PiLocation::First,
            8,
            MetadataLayout::Separate,
        ),
    )
    .unwrap();
    let tags = PiTags::default();
    assert_eq!(
        ext.generate_extended(&mut [0u8; 512], &tags),
        Err(PiError::Length {
            what: "extended",
            len: 512,
            unit: 520
        })
    );
    assert_eq!(
        sep.generate_separate(&[0u8; 1024], &mut [0u8; 8], &tags),
        Err(PiError::BlockCount {
            data_blocks: 2,
            metadata_blocks: 1
        })
    );
    assert!(matches!(
        sep.check_separate(&[0u8; 500], &[0u8; 8], &tags, PrChk::ALL),
        Err(PiError::Length { what: "data", .. })
    ));
    assert!(matches!(
        sep.check_extended(&[0u8; 520], &tags, PrChk::ALL),
        Err(PiError::Layout {
            format: MetadataLayout::Separate,
            given: MetadataLayout::Extended
        })
    ));
    assert!(matches!(
        ext.generate_separate(&[0u8; 512], &mut [0u8; 8], &tags),
        Err(PiError::Layout { .. })
    ));
    let plain = MetadataFormat {
        size: 8,
        layout: MetadataLayout::Separate,
        pi: None,
    };
    let err = Protection::new(512, plain).unwrap_err();
    assert!(
        err.to_string()
            .contains("carries no protection information")
    );
    assert!(matches!(
        Protection::new(
            0,
            format(
                PiType::Type1,
                PiLocation::First,
                8,
                MetadataLayout::Separate
            )
        ),
        Err(PiError::BadFormat { .. })
    ));
    assert!(matches!(
        Protection::new(
            512,
            format(PiType::Type1, PiLocation::Last, 4, MetadataLayout::Separate)
        ),
        Err(PiError::BadFormat { .. })
    ));
    // An empty buffer is zero blocks: nothing to do, nothing wrong.
    assert_eq!(ext.check_extended(&[], &tags, PrChk::ALL), Ok(()));
}

/// Throughput of generating and checking 4096+8 blocks, beside the same
/// CRC computed a byte at a time (a 256-entry table) in the same run.
/// Printed, not asserted; representative under `--release` only.
#[test]
fn throughput_is_printed_beside_a_byte_at_a_time_crc() {
    const BYTEWISE: Crc<u16, Table<1>> = Crc::<u16, Table<1>>::new(&CRC_16_T10_DIF);
    let bytes = if cfg!(debug_assertions) {
        1 << 20
    } else {
        64 << 20
    };
    let blocks = bytes / 4096;
    let p = Protection::new(
        4096,
        format(
            PiType::Type1,
            PiLocation::First,
            8,
            MetadataLayout::Separate,
        ),
    )
    .unwrap();
    let data = pattern(bytes, 5);
    let mut meta = vec![0u8; blocks * 8];
    let tags = PiTags::for_lba(0, 0);
    let mbps = |start: std::time::Instant| bytes as f64 / start.elapsed().as_secs_f64() / 1e6;

    let t = std::time::Instant::now();
    p.generate_separate(&data, &mut meta, &tags).unwrap();
    let generate = mbps(t);
    let t = std::time::Instant::now();
    p.check_separate(&data, &meta, &tags, PrChk::ALL).unwrap();
    let check = mbps(t);
    let t = std::time::Instant::now();
    let mut acc = 0u16;
    for block in data.chunks_exact(4096) {
        acc ^= BYTEWISE.checksum(block);
    }
    let bytewise = mbps(t);
    let table16 = meta
        .chunks_exact(8)
        .fold(0u16, |a, t| a ^ u16::from_be_bytes([t[0], t[1]]));
    assert_eq!(acc, table16, "both tables compute the same guards");
    println!(
        "software PI over {} MiB of 4096+8 blocks ({} build): generate {generate:.0} MB/s, \
         check {check:.0} MB/s; peer: byte-at-a-time CRC alone {bytewise:.0} MB/s",
        bytes >> 20,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
}
