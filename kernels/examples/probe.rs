//! Prints the adapter the kernels would use, or why there is none, and times one small
//! generator multiplication (which includes compiling its shader module).

fn main() {
    let started = std::time::Instant::now();
    let gpu = match cess_kernels::Gpu::open() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("no GPU backend: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "adapter: {} (opened in {:?})",
        gpu.adapter(),
        started.elapsed()
    );
    let mut two = [0u8; 32];
    two[0] = 2;
    let started = std::time::Instant::now();
    match gpu.generator_mul(&[two]) {
        Ok(out) => println!(
            "2·g = {} (in {:?}, shader compilation included)",
            out[0]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            started.elapsed()
        ),
        Err(e) => {
            eprintln!("self-check failed: {e}");
            std::process::exit(1);
        }
    }
}
