// Workgroup-wide sum and max over LANES invocations with subgroup operations (on adapters with
// `Features::SUBGROUP`; wgpu 30's naga takes them without `enable subgroups;`); every lane gets the result.
// 1. Each subgroup (the invocations that run in lockstep: 32 on NVIDIA, 32 or 64 on AMD, 4 to 16 on a CPU
//    driver) combines its lanes in registers: `subgroupAdd(v)`.
// 2. One lane per subgroup writes that partial to scratch, the others write the identity, and one barrier
//    makes the LANES slots visible.
// 3. Each subgroup combines all LANES slots: its lane k reads slots k, k + size, k + 2 size, ..., and a
//    second `subgroupAdd` adds those. Together a subgroup's lanes read every slot once, so this holds for
//    any subgroup size and however the driver maps lanes to subgroups.
// Two barriers instead of the tree's log2(LANES) + 2; the sum's rounding differs from the tree's (another
// order of the same additions).

// (the lane's index within its subgroup, the subgroup's size), counted over its active lanes: all of them
// here, as the row kernels call these in uniform control flow.
fn subgroup_place() -> vec2<u32> {
    return vec2<u32>(subgroupExclusiveAdd(1u), subgroupAdd(1u));
}

fn lanes_sum(v: f32, lane: u32) -> f32 {
    let at = subgroup_place();
    let partial = subgroupAdd(v);
    scratch[lane] = select(0.0, partial, at.x == 0u);
    workgroupBarrier();
    var s = 0.0;
    for (var j = at.x; j < LANES; j = j + at.y) {
        s = s + scratch[j];
    }
    let r = subgroupAdd(s);
    workgroupBarrier(); // every lane has read scratch before the next call writes it
    return r;
}

fn lanes_max(v: f32, lane: u32) -> f32 {
    let at = subgroup_place();
    let partial = subgroupMax(v);
    scratch[lane] = select(NEG_INF, partial, at.x == 0u);
    workgroupBarrier();
    var m = NEG_INF;
    for (var j = at.x; j < LANES; j = j + at.y) {
        m = max(m, scratch[j]);
    }
    let r = subgroupMax(m);
    workgroupBarrier();
    return r;
}
