//! The one [`ProofSource`] over an engine store: challenged blocks by range reads (many in
//! flight), tags from each fragment's metadata blob.

use cess_engine::Store;
use cess_proofs::{FragmentId, ProofSource};

/// Engine range reads and the metadata blob.
#[derive(Debug)]
pub struct StoreSource<'a>(pub &'a Store);

impl ProofSource for StoreSource<'_> {
    type Error = cess_engine::StoreError;

    fn tags(&mut self, id: &FragmentId) -> Result<Vec<u8>, Self::Error> {
        self.0.meta(*id).wait()
    }

    fn read(&mut self, id: &FragmentId, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        buf.copy_from_slice(&self.0.read(*id, offset, buf.len() as u64).wait()?);
        Ok(())
    }

    fn read_many(
        &mut self,
        reads: &[(FragmentId, u64)],
        bufs: &mut [Vec<u8>],
    ) -> Result<(), (usize, Self::Error)> {
        let requests: Vec<_> = reads
            .iter()
            .zip(bufs.iter())
            .map(|((id, offset), buf)| (*id, *offset, buf.len() as u64))
            .collect();
        for (k, (got, buf)) in self
            .0
            .read_many(&requests, 64)
            .into_iter()
            .zip(bufs.iter_mut())
            .enumerate()
        {
            buf.copy_from_slice(&got.map_err(|e| (k, e))?);
        }
        Ok(())
    }
}
