//! The fuzz harness's logic on a few thousand seeded random inputs, so the
//! stable test run exercises what `cargo +nightly fuzz` explores.

use nvme_engine::fuzzing;

fn inputs(seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(move |_| {
        let len = 16 + (next() % 400) as usize;
        (0..len).map(|_| next() as u8).collect()
    })
}

#[test]
fn hostile_device_inputs_never_break_the_completion_promise() {
    let mut up = 0;
    let mut submitted = 0;
    let mut done = 0;
    for data in inputs(0x5eed, 3000) {
        let o = fuzzing::run(&data);
        up += o.brought_up as u32;
        submitted += o.submitted;
        done += o.succeeded + o.failed;
    }
    // The inputs reach the I/O path, not only bring-up failures.
    assert!(up > 200, "only {up} bring-ups succeeded");
    assert!(
        submitted > 1000 && done > 500,
        "{submitted} submitted, {done} completed"
    );
}
