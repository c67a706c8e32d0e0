//! Untrusted bytes as a manifest. Nothing may panic; whatever decodes re-encodes to the same
//! manifest.
#![no_main]

use cess_codec::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::decode(data) {
        let again = Manifest::decode(&manifest.encode()).expect("a decoded manifest re-encodes");
        assert_eq!(again, manifest);
    }
});
