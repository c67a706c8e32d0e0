//! The device: adapter choice and report, pipelines, buffers, dispatch and read-back.

use std::sync::{Arc, Mutex, OnceLock};

use wgpu::util::DeviceExt;

use crate::GpuError;
use crate::shader::Module;

/// Threads per workgroup in every 1-D kernel (`WORKGROUP` in `common.wgsl`).
const WORKGROUP: u32 = 64;

/// Storage buffers per shader stage the modules need (the MSM's 7).
const STORAGE_BUFFERS_NEEDED: u32 = 7;

/// What the probe found: enough to say which device ran, and why it might be slow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// A software rasterizer (lavapipe, WARP): correct, not fast.
    pub is_software: bool,
    pub max_storage_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub max_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_stage: u32,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}, driver {} {}{}), storage binding {} MiB",
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.driver_info,
            if self.is_software { ", software" } else { "" },
            self.max_storage_binding_bytes >> 20
        )
    }
}

fn report(adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let limits = adapter.limits();
    AdapterReport {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
        is_software: info.device_type == wgpu::DeviceType::Cpu,
        max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
        max_buffer_bytes: limits.max_buffer_size,
        max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
    }
}

fn preference(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

struct ModulePipelines {
    layout: wgpu::BindGroupLayout,
    entries: Vec<(&'static str, wgpu::ComputePipeline)>,
}

/// An open GPU device with the kernels' pipelines (compiled on first use, per module).
pub struct Device {
    device: wgpu::Device,
    queue: wgpu::Queue,
    report: AdapterReport,
    modules: [OnceLock<Result<ModulePipelines, String>>; 4],
    /// The first error wgpu reported outside an operation's own checks.
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("adapter", &self.report)
            .finish_non_exhaustive()
    }
}

/// Lists the adapters wgpu can see, best first.
pub fn adapters() -> Vec<(wgpu::Adapter, AdapterReport)> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let mut found: Vec<_> = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .map(|a| {
            let r = report(&a);
            (a, r)
        })
        .collect();
    found.sort_by_key(|(a, _)| preference(a.get_info().device_type));
    found
}

impl Device {
    /// Opens the best adapter, or the first whose name contains `$CESS_GPU_ADAPTER`.
    pub fn open() -> Result<Device, GpuError> {
        let found = adapters();
        let wanted = std::env::var("CESS_GPU_ADAPTER").ok();
        let names: Vec<String> = found.iter().map(|(_, r)| r.to_string()).collect();
        let chosen = found.into_iter().find(|(_, r)| match &wanted {
            Some(w) => r.name.to_lowercase().contains(&w.to_lowercase()),
            None => true,
        });
        let Some((adapter, report)) = chosen else {
            let reason = match (&wanted, names.is_empty()) {
                (_, true) => "wgpu found no adapter (no GPU driver, and no Vulkan ICD such as \
                              Mesa's lavapipe: apt-get install mesa-vulkan-drivers)"
                    .to_string(),
                (Some(w), false) => {
                    format!(
                        "CESS_GPU_ADAPTER={w:?} matches none of: {}",
                        names.join("; ")
                    )
                }
                (None, false) => unreachable!("an adapter exists"),
            };
            return Err(GpuError::NoAdapter(reason));
        };
        if report.max_storage_buffers_per_stage < STORAGE_BUFFERS_NEEDED {
            return Err(GpuError::MissingLimit {
                adapter: report.name.clone(),
                limit: "max_storage_buffers_per_shader_stage",
                needed: u64::from(STORAGE_BUFFERS_NEEDED),
                available: u64::from(report.max_storage_buffers_per_stage),
            });
        }
        let adapter_limits = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: adapter_limits.max_storage_buffer_binding_size,
            max_buffer_size: adapter_limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: adapter_limits
                .max_storage_buffers_per_shader_stage,
            max_compute_workgroups_per_dimension: adapter_limits
                .max_compute_workgroups_per_dimension,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cess-kernels"),
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device {
            adapter: report.name.clone(),
            reason: e.to_string(),
        })?;
        let uncaptured = Arc::new(Mutex::new(None));
        let slot = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        Ok(Device {
            device,
            queue,
            report,
            modules: Default::default(),
            uncaptured,
        })
    }

    pub fn report(&self) -> &AdapterReport {
        &self.report
    }

    fn take_uncaptured(&self) -> Option<String> {
        self.uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn module(&self, module: Module) -> Result<&ModulePipelines, GpuError> {
        let index = Module::ALL
            .iter()
            .position(|m| *m == module)
            .expect("every module is in ALL");
        self.modules[index]
            .get_or_init(|| self.compile(module))
            .as_ref()
            .map_err(|e| GpuError::Shader {
                module: module.name(),
                reason: e.clone(),
            })
    }

    fn compile(&self, module: Module) -> Result<ModulePipelines, String> {
        let source = module.source();
        let shader = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(module.name()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let mut entries: Vec<wgpu::BindGroupLayoutEntry> = (0..module.storage_bindings())
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: module.storage_bindings(),
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(module.name()),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(module.name()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        // Each entry point is compiled on its own (the driver inlines every function it
        // reaches: the field arithmetic is compiled once per entry point), so they are
        // compiled side by side, one per core. On a CPU adapter this compilation is most of
        // a first use: lavapipe 22.3 takes 40 s for `g1_op`, and 104 s for `window_reduce`
        // plus 30 s for the other MSM entries, which now overlap it.
        let create = |entry: &'static str| {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&pipeline_layout),
                    module: &shader,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        };
        let names = module.entry_points();
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(names.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut compiled: Vec<(usize, wgpu::ComputePipeline)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&entry) = names.get(i) else {
                                return mine;
                            };
                            mine.push((i, create(entry)));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a pipeline compilation panicked"))
                .collect()
        });
        compiled.sort_by_key(|(i, _)| *i);
        assert_eq!(
            compiled.len(),
            names.len(),
            "every entry point compiled once"
        );
        let entries = compiled
            .into_iter()
            .map(|(i, pipeline)| (names[i], pipeline))
            .collect();
        if let Some(e) = self.take_uncaptured() {
            return Err(e);
        }
        Ok(ModulePipelines { layout, entries })
    }

    /// A storage buffer holding `words`.
    pub fn buffer_from(&self, label: &str, words: &[u32]) -> wgpu::Buffer {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.buffer_from_bytes(label, &bytes)
    }

    /// A storage buffer of `bytes` raw bytes, padded with zeros to a whole word (at least one:
    /// empty bindings are not allowed).
    pub fn buffer_from_bytes(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &padded,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A zeroed storage buffer of `len_words` words.
    pub fn zeroed(&self, label: &str, len_words: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len_words.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Checks that every buffer fits one storage binding on this device.
    pub fn check_binding(&self, what: &'static str, len_bytes: usize) -> Result<(), GpuError> {
        let max = self
            .report
            .max_storage_binding_bytes
            .min(self.report.max_buffer_bytes);
        if len_bytes as u64 > max {
            return Err(GpuError::TooLarge {
                what,
                len_bytes: len_bytes as u64,
                max_bytes: max,
            });
        }
        Ok(())
    }

    /// Runs `steps` (entry point, thread count) in order over one bind group, then copies
    /// each buffer of `read` back. A step with `threads == 1` runs one workgroup (the single-thread and
    /// single-workgroup kernels).
    pub fn run(
        &self,
        module: Module,
        buffers: &[&wgpu::Buffer],
        params: &wgpu::Buffer,
        steps: &[(&str, u32)],
        read: &[&wgpu::Buffer],
    ) -> Result<Vec<Vec<u32>>, GpuError> {
        let pipelines = self.module(module)?;
        let mut entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: buffers.len() as u32,
            resource: params.as_entire_binding(),
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(module.name()),
            layout: &pipelines.layout,
            entries: &entries,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        for &(entry, threads) in steps {
            let pipeline = &pipelines
                .entries
                .iter()
                .find(|(name, _)| *name == entry)
                .unwrap_or_else(|| panic!("{entry} is not an entry point of {}", module.name()))
                .1;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            let (x, y) = self.grid(threads)?;
            pass.dispatch_workgroups(x, y, 1);
        }
        let stagings: Vec<wgpu::Buffer> = read
            .iter()
            .map(|buffer| {
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("read-back"),
                    size: buffer.size(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
                staging
            })
            .collect();
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        for staging in &stagings {
            let tx = tx.clone();
            staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        }
        drop(tx);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Execution(e.to_string()))?;
        if let Some(e) = self.take_uncaptured() {
            return Err(GpuError::Execution(e));
        }
        for _ in &stagings {
            rx.recv()
                .map_err(|_| GpuError::Execution("read-back callback dropped".into()))?
                .map_err(|e| GpuError::Execution(e.to_string()))?;
        }
        let mut out = Vec::with_capacity(stagings.len());
        for staging in &stagings {
            let words = {
                let view = staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| GpuError::Execution(e.to_string()))?;
                view.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect()
            };
            staging.unmap();
            out.push(words);
        }
        Ok(out)
    }

    /// Workgroups for `threads` threads: one row while it fits the per-dimension limit,
    /// else a 2-D grid (`thread_index` in `common.wgsl` flattens it).
    fn grid(&self, threads: u32) -> Result<(u32, u32), GpuError> {
        let groups = threads.div_ceil(WORKGROUP).max(1);
        let max = self.report.max_workgroups_per_dimension;
        if groups <= max {
            return Ok((groups, 1));
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(GpuError::TooLarge {
                what: "dispatch",
                len_bytes: u64::from(threads),
                max_bytes: u64::from(max) * u64::from(max) * u64::from(WORKGROUP),
            });
        }
        Ok((max, y))
    }
}
