//! Every WGSL module parses and validates under naga (the compiler wgpu itself uses), with no
//! adapter needed, and declares exactly the entry points and bindings the host drives.

use cess_kernels::shader::Module;

#[test]
fn every_module_validates_under_naga() {
    for module in Module::ALL {
        let source = module.source();
        let parsed = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
            panic!(
                "{}: WGSL does not parse:\n{}",
                module.name(),
                e.emit_to_string(&source)
            )
        });
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&parsed)
        .unwrap_or_else(|e| {
            panic!(
                "{}: WGSL does not validate:\n{}",
                module.name(),
                e.emit_to_string(&source)
            )
        });
        let entries: Vec<&str> = parsed
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(entries, module.entry_points(), "{}", module.name());
        let bindings = parsed
            .global_variables
            .iter()
            .filter(|(_, v)| v.binding.is_some())
            .count() as u32;
        assert_eq!(bindings, module.storage_bindings() + 1, "{}", module.name());
    }
}

#[test]
fn no_template_token_survives_assembly() {
    for module in Module::ALL {
        let source = module.source();
        for token in ["FIELD", "NLIMBS", "NPLUS1", "NPLUS2"] {
            assert!(
                !source.contains(token),
                "{}: {token} left in",
                module.name()
            );
        }
    }
}
