//! WGSL sources, assembled from the templates in `wgsl/`.
//!
//! `field.wgsl` is written once and instantiated for Fp (12 limbs) and Fr (8 limbs); the
//! constants come from [`crate::field`], the same ones the CPU reference uses, so the two
//! cannot drift apart.

use crate::field::{FP, FR, FieldParams};

const LIMB: &str = include_str!("wgsl/limb.wgsl");
const FIELD: &str = include_str!("wgsl/field.wgsl");
const G1: &str = include_str!("wgsl/g1.wgsl");
const COMMON: &str = include_str!("wgsl/common.wgsl");

/// A compute module: its name and its entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// Element-wise field and point operations (tests and probes).
    Ops,
    /// Pippenger MSM.
    Msm,
    /// Batch scalar multiplication.
    ScalarMul,
    /// Fr linear combinations of sectors.
    LinComb,
}

impl Module {
    pub const ALL: [Module; 4] = [Module::Ops, Module::Msm, Module::ScalarMul, Module::LinComb];

    pub fn name(self) -> &'static str {
        match self {
            Module::Ops => "ops",
            Module::Msm => "msm",
            Module::ScalarMul => "scalar_mul",
            Module::LinComb => "lincomb",
        }
    }

    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Module::Ops => &["fp_op", "fr_op", "g1_op"],
            Module::Msm => &[
                "load",
                "count",
                "scan",
                "scatter",
                "bucket_sum",
                "window_reduce",
                "final_sum",
            ],
            Module::ScalarMul => &["start", "step", "finish"],
            Module::LinComb => &["premul", "dot_rows", "combine_cols"],
        }
    }

    /// The storage buffers of binding 0.. (the uniform follows them).
    pub fn storage_bindings(self) -> u32 {
        match self {
            Module::Ops => 2,
            Module::Msm => 7,
            Module::ScalarMul => 4,
            Module::LinComb => 3,
        }
    }

    fn body(self) -> &'static str {
        match self {
            Module::Ops => include_str!("wgsl/ops.wgsl"),
            Module::Msm => include_str!("wgsl/msm.wgsl"),
            Module::ScalarMul => include_str!("wgsl/scalar_mul.wgsl"),
            Module::LinComb => include_str!("wgsl/lincomb.wgsl"),
        }
    }

    /// The whole WGSL source of the module.
    pub fn source(self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        out.push_str(COMMON);
        out.push_str(LIMB);
        out.push_str(&field_source("fp", &FP));
        out.push_str(&field_source("fr", &FR));
        out.push_str(G1);
        out.push_str(self.body());
        out
    }
}

fn limbs_literal(limbs: &[u32]) -> String {
    limbs
        .iter()
        .map(|l| format!("0x{l:08x}u"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn field_source<const N: usize>(prefix: &str, params: &FieldParams<N>) -> String {
    let modulus_minus_2 = params.modulus_minus_2();
    FIELD
        .replace(
            "FIELD_MODULUS_MINUS_2_LIMBS",
            &limbs_literal(&modulus_minus_2),
        )
        .replace("FIELD_MODULUS_LIMBS", &limbs_literal(&params.modulus))
        .replace("FIELD_R2_LIMBS", &limbs_literal(&params.r2))
        .replace("FIELD_ONE_LIMBS", &limbs_literal(&params.one))
        .replace("FIELD_INV_VALUE", &format!("0x{:08x}u", params.inv))
        .replace("NLIMBS", &N.to_string())
        .replace("NPLUS1", &(N + 1).to_string())
        .replace("NPLUS2", &(N + 2).to_string())
        .replace("FIELD", prefix)
}
