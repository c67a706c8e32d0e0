// Dispatch helpers shared by every kernel module. Work is launched as a 2-D grid of
// 64-thread workgroups when one dimension is not enough; `thread_index` flattens it.

const WORKGROUP: u32 = 64u;

fn thread_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP;
}
