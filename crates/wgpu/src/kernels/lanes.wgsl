// Workgroup-wide sum and max over LANES invocations through workgroup memory (every lane gets the result):
// a tree of LANES / 2, LANES / 4, ..., 1 combinations, one barrier each. Runs on every adapter; the
// subgroup version (lanes_subgroup.wgsl) replaces it where the adapter has subgroups.

fn lanes_sum(v: f32, lane: u32) -> f32 {
    scratch[lane] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        if lane < s {
            scratch[lane] = scratch[lane] + scratch[lane + s];
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

fn lanes_max(v: f32, lane: u32) -> f32 {
    scratch[lane] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        if lane < s {
            scratch[lane] = max(scratch[lane], scratch[lane + s]);
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}
