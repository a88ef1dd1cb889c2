// Shared by every kernel file: compiled in front of each of them.

// The parameter block: shapes, strides, offsets and scalars of one dispatch (see kernels/mod.rs).
@group(0) @binding(0) var<storage, read> p: array<u32>;

const NEG_INF: f32 = -3.40282347e38;

// Parameter i read as an f32.
fn pf(i: u32) -> f32 {
    return bitcast<f32>(p[i]);
}

// The linear index of a workgroup in a 2-D grid (grids past 65535 groups spill into y).
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The storage indices of element i (row-major over the shape) in strided operands 0, 1 and 2, from one
// walk over the axes (a division per axis, shared by the three):
// p[4] = rank, p[5..13] = dims, p[13 + 9k] = offset of operand k, p[14 + 9k..] = its strides.
// A kernel with fewer operands ignores the other components (the parameter block is zero past its end).
fn strided_offsets(i: u32) -> vec3<u32> {
    var off = vec3<u32>(p[13u], p[22u], p[31u]);
    if p[4] == 1u {
        // one axis after merging (contiguous or evenly strided operands): no division
        return off + i * vec3<u32>(p[14u], p[23u], p[32u]);
    }
    var rem = i;
    for (var a = i32(p[4]) - 1; a >= 0; a = a - 1) {
        let d = p[5u + u32(a)];
        let at = rem % d;
        rem = rem / d;
        off = off + at * vec3<u32>(p[14u + u32(a)], p[23u + u32(a)], p[32u + u32(a)]);
    }
    return off;
}

// A workgroup's lanes (the row kernels and reduce.wgsl's `fold`: one workgroup per output) and their shared
// scratch. `lanes_sum` and `lanes_max` come from lanes.wgsl or lanes_subgroup.wgsl (context.rs: `Lanes`).
const LANES: u32 = 64u;
var<workgroup> scratch: array<f32, 64>;

// tanh that stays finite for large |x| on every driver.
fn tanh_(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)
fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
}

// GELU (tanh approximation): gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
fn gelu_u(x: f32) -> f32 {
    return 0.7978845608 * (x + 0.044715 * x * x * x);
}

// gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, t = tanh(u)
fn gelu_grad(x: f32) -> f32 {
    let t = tanh_(gelu_u(x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608 * (1.0 + 3.0 * 0.044715 * x * x);
}

// x^y with the CPU's (libm's) results where WGSL's pow is undefined: negative x with integer y, and x = 0.
fn powf(x: f32, y: f32) -> f32 {
    if x == 0.0 {
        return select(select(1.0, 1.0 / x, y < 0.0), 0.0, y > 0.0);
    }
    if x < 0.0 {
        if fract(y) != 0.0 {
            return bitcast<f32>(0x7fc00000u); // NaN
        }
        let m = pow(-x, y);
        return select(m, -m, fract(y * 0.5) != 0.0);
    }
    return pow(x, y);
}
