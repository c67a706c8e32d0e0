//! Which superblock to trust at open, as a pure decision over the copies read (the caller,
//! `format::read_superblock`, reads them and rewrites the damaged ones the decision names).
//!
//! | a copy of a newer version | valid copies | every copy lacks the magic | valid copies agree | node matches | case |
//! |---|---|---|---|---|---|
//! | yes | – | – | – | – | `NewerVersion` |
//! | no | 0 | yes | – | – | `NotFormatted` |
//! | no | 0 | no | – | – | `AllCorrupt` |
//! | no | ≥ 1 | – | no | – | `Conflict` |
//! | no | ≥ 1 | – | yes | no | `WrongNode` |
//! | no | ≥ 1 | – | yes | yes | `Agreed`, the invalid copies to rewrite |

use crate::layout::{NodeId, Superblock, SuperblockFault};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SuperblockCase {
    /// Every valid copy says this; the copies at these indices are damaged.
    Agreed {
        superblock: Superblock,
        damaged: Vec<usize>,
    },
    NewerVersion(u32),
    NotFormatted,
    AllCorrupt,
    Conflict,
    WrongNode {
        found: NodeId,
    },
}

pub(super) fn superblock_case(
    copies: &[Result<Superblock, SuperblockFault>],
    node_id: NodeId,
) -> SuperblockCase {
    if let Some(found) = copies.iter().find_map(|c| match c {
        Err(SuperblockFault::NewerVersion(v)) => Some(*v),
        _ => None,
    }) {
        return SuperblockCase::NewerVersion(found);
    }
    let valid: Vec<&Superblock> = copies.iter().flatten().collect();
    let Some(&first) = valid.first() else {
        if copies
            .iter()
            .all(|c| matches!(c, Err(SuperblockFault::NoMagic)))
        {
            return SuperblockCase::NotFormatted;
        }
        return SuperblockCase::AllCorrupt;
    };
    if valid.iter().any(|sb| *sb != first) {
        return SuperblockCase::Conflict;
    }
    if first.node_id != node_id {
        return SuperblockCase::WrongNode {
            found: first.node_id,
        };
    }
    SuperblockCase::Agreed {
        superblock: first.clone(),
        damaged: copies
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_err())
            .map(|(i, _)| i)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CorruptKind;
    use crate::layout::{FORMAT_VERSION, Geometry};

    fn superblock(node: u8, store: u8) -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            node_id: NodeId([node; 32]),
            store_id: [store; 16],
            geometry: Geometry {
                device_bytes: 1 << 30,
                shard_count: 2,
                journal_bytes: 1 << 20,
                checkpoint_bytes: 1 << 20,
                max_object_bytes: 8 << 20,
                max_meta_bytes: 1 << 16,
            },
        }
    }

    #[test]
    fn every_row_of_the_table() {
        let me = NodeId([1; 32]);
        let good = || Ok(superblock(1, 9));
        let corrupt = || Err(SuperblockFault::Corrupt(CorruptKind::Checksum));
        let blank = || Err(SuperblockFault::NoMagic);
        let rows: Vec<(Vec<Result<Superblock, SuperblockFault>>, SuperblockCase)> = vec![
            (
                vec![good(), Err(SuperblockFault::NewerVersion(99)), good()],
                SuperblockCase::NewerVersion(99),
            ),
            (
                vec![blank(), blank(), blank()],
                SuperblockCase::NotFormatted,
            ),
            (
                vec![blank(), corrupt(), blank()],
                SuperblockCase::AllCorrupt,
            ),
            (
                vec![good(), Ok(superblock(1, 8)), good()],
                SuperblockCase::Conflict,
            ),
            (
                vec![Ok(superblock(2, 9)), corrupt(), blank()],
                SuperblockCase::WrongNode {
                    found: NodeId([2; 32]),
                },
            ),
            (
                vec![good(), good(), good()],
                SuperblockCase::Agreed {
                    superblock: superblock(1, 9),
                    damaged: vec![],
                },
            ),
            (
                vec![corrupt(), good(), blank()],
                SuperblockCase::Agreed {
                    superblock: superblock(1, 9),
                    damaged: vec![0, 2],
                },
            ),
        ];
        for (copies, case) in rows {
            assert_eq!(superblock_case(&copies, me), case, "{copies:?}");
        }
    }
}
