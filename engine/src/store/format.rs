//! Formatting a target, and reading its superblock copies at open: the I/O around
//! `superblock::superblock_case`, which decides from what the copies hold.

use super::options::{FormatOptions, Target};
use super::superblock::{SuperblockCase, superblock_case};
use crate::aligned::{AlignedBuf, BLOCK_BYTES};
use crate::device::{Device, IoOp, execute_one};
use crate::error::{FormatError, OpenError};
use crate::layout::{
    self, FORMAT_VERSION, Geometry, NodeId, SIGNATURE_PROBE_BYTES, Superblock, SuperblockFault,
};
use crate::shard::Shard;

/// Formats `target`: shard metadata first, then the superblock copies, each flushed, so an
/// interrupted format leaves no superblock rather than one pointing at garbage.
pub fn format(target: &Target, options: &FormatOptions) -> Result<Superblock, FormatError> {
    let name = target.name();
    let io = |action: &'static str| {
        let name = name.clone();
        move |source| FormatError::Io {
            action,
            target: name,
            source,
        }
    };
    let mut dev = target.open_device().map_err(io("open"))?;
    let device_bytes = dev.len_bytes();
    if device_bytes >= SIGNATURE_PROBE_BYTES as u64 {
        let mut head = AlignedBuf::zeroed(SIGNATURE_PROBE_BYTES);
        execute_one(dev.as_mut(), IoOp::read(0, head.as_blocks_mut())).map_err(io("read"))?;
        if let Some(found) = layout::foreign_signature(&head) {
            if !options.force {
                return Err(FormatError::ForeignSignature {
                    target: name,
                    found,
                });
            }
            tracing::warn!(target = %name, "overwriting {found} (forced)");
        }
    }
    let geometry = options.geometry(device_bytes);
    geometry
        .validate()
        .map_err(|reason| FormatError::Geometry {
            target: name.clone(),
            reason,
        })?;
    let store_id = options.store_id.unwrap_or_else(rand::random);
    for (id, regions) in geometry.shards().iter().enumerate() {
        Shard::format(id as u32, dev.as_mut(), regions, store_id).map_err(io("write"))?;
    }
    execute_one(dev.as_mut(), IoOp::flush()).map_err(io("flush"))?;
    let superblock = Superblock {
        version: FORMAT_VERSION,
        node_id: options.node_id,
        store_id,
        geometry,
    };
    let block = AlignedBuf::copy_from(&superblock.encode());
    let offsets = Geometry::superblock_offsets(superblock.geometry.device_bytes);
    let mut ops: Vec<IoOp<'_>> = offsets
        .iter()
        .map(|&o| IoOp::write(o, block.as_blocks()))
        .collect();
    dev.execute(&mut ops);
    for op in &mut ops {
        op.take_result().map_err(io("write"))?;
    }
    execute_one(dev.as_mut(), IoOp::flush()).map_err(io("flush"))?;
    Ok(superblock)
}

/// Reads the superblock copies, checks identity and version, and rewrites damaged copies.
pub(super) fn read_superblock(
    dev: &mut dyn Device,
    name: &str,
    node_id: NodeId,
) -> Result<Superblock, OpenError> {
    let read_at = |dev: &mut dyn Device, offsets: &[u64]| {
        offsets
            .iter()
            .map(|&offset| {
                let mut buf = AlignedBuf::zeroed(BLOCK_BYTES);
                match execute_one(dev, IoOp::read(offset, buf.as_blocks_mut())) {
                    Ok(()) => Superblock::decode(&buf),
                    Err(_) => Err(SuperblockFault::Corrupt(
                        crate::error::CorruptKind::Truncated,
                    )),
                }
            })
            .collect::<Vec<_>>()
    };
    let len = dev.len_bytes();
    if len < 4 * BLOCK_BYTES as u64 {
        return Err(OpenError::NotFormatted {
            target: name.into(),
        });
    }
    let mut offsets = Geometry::superblock_offsets(len);
    let mut read_size = len;
    let mut copies = read_at(dev, &offsets);
    // The tail copies sit at the formatted size; if the target changed size, look there.
    if let Some(sb) = copies.iter().flatten().next() {
        let formatted = sb.geometry.device_bytes;
        if formatted > len {
            return Err(OpenError::SizeChanged {
                target: name.into(),
                expected: formatted,
                actual: len,
            });
        }
        if formatted != len {
            offsets = Geometry::superblock_offsets(formatted);
            read_size = formatted;
            copies = read_at(dev, &offsets);
        }
    }
    let (superblock, damaged) = match superblock_case(&copies, node_id) {
        // The copies must name the size whose places they were read from: damaged copies are
        // rewritten at those places, which must be the ones the superblock describes.
        SuperblockCase::Agreed { superblock, .. }
            if superblock.geometry.device_bytes != read_size =>
        {
            return Err(OpenError::SuperblockConflict {
                target: name.into(),
            });
        }
        SuperblockCase::Agreed {
            superblock,
            damaged,
        } => (superblock, damaged),
        SuperblockCase::NewerVersion(found) => {
            return Err(OpenError::NewerVersion {
                target: name.into(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        SuperblockCase::NotFormatted => {
            return Err(OpenError::NotFormatted {
                target: name.into(),
            });
        }
        SuperblockCase::AllCorrupt => {
            return Err(OpenError::SuperblockCorrupt {
                target: name.into(),
                copies: copies.len(),
            });
        }
        SuperblockCase::Conflict => {
            return Err(OpenError::SuperblockConflict {
                target: name.into(),
            });
        }
        SuperblockCase::WrongNode { found } => {
            return Err(OpenError::WrongNode {
                target: name.into(),
                expected: node_id,
                found,
            });
        }
    };
    let damaged: Vec<u64> = damaged.iter().map(|&i| offsets[i]).collect();
    if !damaged.is_empty() {
        tracing::warn!(target = %name, "rewriting {} damaged superblock copies", damaged.len());
        let block = AlignedBuf::copy_from(&superblock.encode());
        let repaired = damaged
            .iter()
            .try_for_each(|&o| execute_one(dev, IoOp::write(o, block.as_blocks())))
            .and_then(|()| execute_one(dev, IoOp::flush()));
        if let Err(e) = repaired {
            tracing::warn!(target = %name, "superblock repair failed ({e}); continuing on the good copies");
        }
    }
    Ok(superblock)
}
