//! The fragment protocol served from an engine store: writes land in the
//! engine's aligned buffers, reads come back as the engine's buffers, and the engine's errors
//! map to the protocol's faults (a hash mismatch is `Mismatch`, a missing fragment `NotFound`).

use cess_engine::{AlignedBuf, Class, FragmentId, ReadBuf, Store, StoreError};
use cess_transport::server::{FragmentStore, StoreFault};
use std::sync::Arc;

/// The engine behind the fragment protocol.
#[derive(Debug, Clone)]
pub struct EngineStore(pub Arc<Store>);

/// An engine read buffer as bytes to send.
#[derive(Debug)]
pub struct ReadBytes(ReadBuf);

impl AsRef<[u8]> for ReadBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn fault(e: StoreError) -> StoreFault {
    match e {
        StoreError::NotFound(_) => StoreFault::NotFound,
        StoreError::HashMismatch { .. } => StoreFault::Mismatch,
        other => StoreFault::Failed(other.to_string()),
    }
}

impl FragmentStore for EngineStore {
    type WriteBuf = AlignedBuf;
    type ReadBuf = ReadBytes;

    fn alloc(&self, len_bytes: usize) -> AlignedBuf {
        self.0.buffer(len_bytes)
    }

    fn fragment_bytes_max(&self) -> u64 {
        self.0.superblock().geometry.max_object_bytes
    }

    async fn len_of(&self, id: FragmentId) -> Result<Option<u64>, StoreFault> {
        let info = self.0.contains(id).await.map_err(fault)?;
        Ok(info.map(|i| i.len_bytes))
    }

    async fn put(&self, id: FragmentId, data: AlignedBuf) -> Result<(), StoreFault> {
        self.0
            .put_buf(id, Class::Active, data)
            .await
            .map(|_| ())
            .map_err(fault)
    }

    async fn read(
        &self,
        id: FragmentId,
        offset: u64,
        len_bytes: u64,
    ) -> Result<ReadBytes, StoreFault> {
        self.0
            .read(id, offset, len_bytes)
            .await
            .map(ReadBytes)
            .map_err(fault)
    }
}
