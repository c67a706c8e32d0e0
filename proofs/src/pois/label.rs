//! Labelling: K layers of N labels for one replica. Label (l, i) is
//! `H_label(replica ‖ l ‖ i ‖ chain ‖ previous ‖ direct ‖ expanders)`, with `chain` = (l, i−1)
//! when i > 0; in layer 0 of every file of a set but the first, `previous` = label (K−1, i) of
//! the file before it in the set (the files of a set are one sequential computation, so a
//! deleted set cannot be labelled again faster than F files one after the other); and when
//! l > 0, `direct` = (l−1, i) and `expanders` = (l−1, p_j(i)) for j < D.
//! [`label_message`] is that definition; [`reference_layers`] applies it naively;
//! [`label_layers`] is the labeller (one reused message buffer, the graph cached, two layers in
//! memory) and is held to the reference by the tests.

use super::graph::{Graph, expander_parents};
use super::{KEYS, LABEL_BYTES, Label, PoisParams, replica_id};

/// Bytes of a label message before its parents: replica, layer, index.
const HEADER_BYTES: usize = 32 + 4 + 4;
/// The longest message: the header and D_max + 2 parents.
const MESSAGE_BYTES_MAX: usize = HEADER_BYTES + (super::DEGREE_MAX as usize + 2) * LABEL_BYTES;

/// The parents of a label from the layer below: the direct one, then the expanders.
pub type Below<'a> = (&'a Label, &'a [Label]);

/// The message hashed into label (`layer`, `index`). `previous` is the previous file's last
/// label at `index` (layer 0 of a file that is not its set's first); `below` the direct parent
/// then the expander parents' labels (None in layer 0).
pub fn label_message(
    replica: &[u8; 32],
    layer: u32,
    index: u32,
    chain: Option<&Label>,
    previous: Option<&Label>,
    below: Option<Below<'_>>,
) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(replica);
    message.extend_from_slice(&layer.to_le_bytes());
    message.extend_from_slice(&index.to_le_bytes());
    if let Some(chain) = chain {
        message.extend_from_slice(chain);
    }
    if let Some(previous) = previous {
        message.extend_from_slice(previous);
    }
    if let Some((direct, expanders)) = below {
        message.extend_from_slice(direct);
        for parent in expanders {
            message.extend_from_slice(parent);
        }
    }
    message
}

/// The label of a message.
pub fn label_of(message: &[u8]) -> Label {
    *blake3::keyed_hash(&KEYS.label, message).as_bytes()
}

/// Every layer of idle file `file_index` of `miner`, by the definition, one label at a time
/// (`layers[l][i]`), the files of its set before it labelled first. Slow and plain: the
/// reference.
pub fn reference_layers(params: &PoisParams, miner: &[u8; 32], file_index: u64) -> Vec<Vec<Label>> {
    let first = file_index - file_index % u64::from(params.files_per_set);
    let mut previous: Option<Vec<Label>> = None;
    let mut layers = Vec::new();
    for file in first..=file_index {
        layers = reference_layers_with(
            params,
            &replica_id(params, miner, file),
            previous.as_deref(),
            |_, _, label| label,
        );
        previous = layers.last().cloned();
    }
    layers
}

/// One file's layers by the definition, given the previous file's last layer (None for the
/// first file of a set), each label passed through `choose(layer, index, honest)` before it
/// is kept (and used by the labels after it): the tests' cheating miners.
pub fn reference_layers_with(
    params: &PoisParams,
    replica: &[u8; 32],
    previous: Option<&[Label]>,
    mut choose: impl FnMut(u32, u32, Label) -> Label,
) -> Vec<Vec<Label>> {
    let mut layers: Vec<Vec<Label>> = Vec::new();
    for layer in 0..u32::from(params.layers) {
        let mut labels: Vec<Label> = Vec::new();
        for index in 0..params.nodes() {
            let chain = if index > 0 {
                Some(labels[index as usize - 1])
            } else {
                None
            };
            let from_previous = if layer == 0 {
                previous.map(|p| p[index as usize])
            } else {
                None
            };
            let below = if layer > 0 {
                let before = &layers[layer as usize - 1];
                let expanders: Vec<Label> = expander_parents(params, index)
                    .iter()
                    .map(|&p| before[p as usize])
                    .collect();
                Some((before[index as usize], expanders))
            } else {
                None
            };
            let message = label_message(
                replica,
                layer,
                index,
                chain.as_ref(),
                from_previous.as_ref(),
                below
                    .as_ref()
                    .map(|(direct, expanders)| (direct, &expanders[..])),
            );
            labels.push(choose(layer, index, label_of(&message)));
        }
        layers.push(labels);
    }
    layers
}

/// Labels every layer of `replica` in order, handing each finished layer to `on_layer`; only
/// two layers are held (2 × N × 32 bytes). `previous`: the last layer of the file before it in
/// its set. Each file is one sequential chain, and so is each set; run sets on separate
/// threads to use more cores.
pub fn label_layers(
    graph: &Graph,
    replica: &[u8; 32],
    previous: Option<&[Label]>,
    mut on_layer: impl FnMut(u32, &[Label]),
) {
    let params = graph.params();
    let nodes = params.nodes() as usize;
    if let Some(previous) = previous {
        assert_eq!(previous.len(), nodes, "the previous file's last layer");
    }
    let mut below: Vec<Label> = vec![[0; 32]; nodes];
    let mut current: Vec<Label> = vec![[0; 32]; nodes];
    let mut message = [0u8; MESSAGE_BYTES_MAX];
    message[..32].copy_from_slice(replica);
    for layer in 0..u32::from(params.layers) {
        message[32..36].copy_from_slice(&layer.to_le_bytes());
        for index in 0..nodes {
            message[36..40].copy_from_slice(&(index as u32).to_le_bytes());
            let mut len = HEADER_BYTES;
            if index > 0 {
                message[len..len + 32].copy_from_slice(&current[index - 1]);
                len += 32;
            }
            if layer == 0 {
                if let Some(previous) = previous {
                    message[len..len + 32].copy_from_slice(&previous[index]);
                    len += 32;
                }
            } else {
                message[len..len + 32].copy_from_slice(&below[index]);
                len += 32;
                for &parent in graph.parents(index as u32) {
                    message[len..len + 32].copy_from_slice(&below[parent as usize]);
                    len += 32;
                }
            }
            current[index] = label_of(&message[..len]);
        }
        on_layer(layer, &current);
        std::mem::swap(&mut below, &mut current);
    }
}

/// Labels stored back to back (an idle file's bytes) as labels.
pub fn labels_of(bytes: &[u8]) -> Vec<Label> {
    bytes
        .chunks_exact(LABEL_BYTES)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect()
}

/// The digest of one column (the K labels at one index, layer 0 first), chained so that the
/// labeller can fold in one layer at a time with 32 bytes per index:
/// d_0 = H_column(0³² ‖ label_0), d_l = H_column(d_(l−1) ‖ label_l).
pub fn column_digest(labels: &[Label]) -> Label {
    labels
        .iter()
        .fold([0u8; 32], |digest, label| fold_column(&digest, label))
}

/// One step of [`column_digest`].
pub fn fold_column(digest: &Label, label: &Label) -> Label {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(digest);
    both[32..].copy_from_slice(label);
    *blake3::keyed_hash(&KEYS.column, &both).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_labeller_is_the_definition() {
        let params = PoisParams::TEST;
        let graph = Graph::new(&params);
        for (miner, file) in [
            ([1u8; 32], 0u64),
            ([1u8; 32], 1),
            ([1u8; 32], 3),
            ([2u8; 32], 0),
        ] {
            let reference = reference_layers(&params, &miner, file);
            let previous =
                (file % 4 > 0).then(|| reference_layers(&params, &miner, file - 1)[3].clone());
            let mut fast = Vec::new();
            label_layers(
                &graph,
                &replica_id(&params, &miner, file),
                previous.as_deref(),
                |layer, labels| {
                    assert_eq!(layer as usize, fast.len());
                    fast.push(labels.to_vec());
                },
            );
            assert_eq!(fast, reference);
        }
        // Another miner's file, or another number, shares no label.
        let a = reference_layers(&params, &[1; 32], 0);
        let b = reference_layers(&params, &[2; 32], 0);
        let c = reference_layers(&params, &[1; 32], 1);
        assert!(a[3].iter().zip(&b[3]).all(|(x, y)| x != y));
        assert!(a[3].iter().zip(&c[3]).all(|(x, y)| x != y));
        // A file depends on the one before it in its set.
        let replica = replica_id(&params, &[1; 32], 1);
        let alone = reference_layers_with(&params, &replica, None, |_, _, l| l);
        assert_ne!(alone, c);
    }

    /// The format is frozen: a change to the message, the keys or the graph shows here.
    #[test]
    fn the_labelling_format_is_frozen() {
        let layers = reference_layers(&PoisParams::TEST, &[7; 32], 3);
        let mut all = blake3::Hasher::new();
        for layer in &layers {
            for label in layer {
                all.update(label);
            }
        }
        assert_eq!(
            crate::hex(&all.finalize().as_bytes()[..8]),
            "0288c8b2c015dd65",
            "labelling format changed"
        );
    }
}
