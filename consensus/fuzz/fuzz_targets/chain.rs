//! Untrusted bytes as a consensus message, a transaction, a genesis file, a write-ahead log
//! entry and a ledger snapshot (a checkpoint's body). Nothing may panic;
//! whatever decodes re-encodes to bytes that decode to the same encoding.
#![no_main]

use cess_consensus::bft::NetMsg;
use cess_consensus::wal::WalEntry;
use cess_consensus::{Genesis, Ledger, Transaction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = NetMsg::decode(data) {
        let again = NetMsg::decode(&message.encode()).expect("a decoded message re-encodes");
        assert_eq!(again.encode(), message.encode());
    }
    if let Ok(tx) = Transaction::decode(data) {
        assert_eq!(Transaction::decode(&tx.encode()).expect("re-encodes"), tx);
    }
    if let Ok(genesis) = Genesis::decode(data) {
        let again = Genesis::decode(&genesis.encode()).expect("re-encodes");
        assert_eq!(again.encode(), genesis.encode());
    }
    if let Ok(entry) = WalEntry::decode(data) {
        let again = WalEntry::decode(&entry.encode()).expect("a decoded entry re-encodes");
        assert_eq!(again.encode(), entry.encode());
    }
    // A snapshot has one encoding: what decodes re-encodes to the same bytes.
    if let Ok(ledger) = Ledger::decode_snapshot(data) {
        assert_eq!(ledger.encode_snapshot(), data);
    }
});
