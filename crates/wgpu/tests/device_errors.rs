//! A failure of the device (here a validation error: a dispatch missing a binding its kernel declares) is an
//! `Err` at the next read-back, naming the op that was being recorded, not a panic; and it stays: the
//! device's state is unknown afterwards. Its own test binary, since the error poisons the process's context.

use lowrank_tensor::{Backend, Tensor};
use lowrank_wgpu::context::{self, Kernel, Lanes};
use lowrank_wgpu::test_device;

#[test]
fn a_device_error_is_a_result_at_the_read_back_naming_the_op() {
    let Some(gpu) = test_device() else { return };
    let ctx = context::global().expect("the device test_device made");
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2], &gpu).unwrap();
    assert_eq!(
        x.try_to_vec().unwrap(),
        [1.0, 2.0],
        "a healthy device reads back"
    );
    let broken = Kernel {
        file: "broken.wgsl",
        source: "@group(0) @binding(1) var<storage, read_write> out: array<f32>;\n\
                 @compute @workgroup_size(1) fn missing_binding() { out[0] = f32(p[0]); }",
        prelude: "",
        entry: "missing_binding",
        lanes: Lanes::Workgroup,
    };
    ctx.dispatch(&broken, &[], &[1], &[], [1, 1, 1]); // binding 1 is not given
    let err = x
        .try_to_vec()
        .expect_err("the device reported an error")
        .to_string();
    assert!(
        err.contains("missing_binding") && err.contains(&gpu.name()),
        "{err}"
    );
    assert!(x.sum_all().try_to_scalar().is_err(), "the error stays");
    let read = std::panic::AssertUnwindSafe(|| x.to_vec());
    let panicked = std::panic::catch_unwind(read).expect_err("to_vec panics");
    let message = panicked
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("missing_binding"), "{message}");
}
