// The patterns of the design brief, exactly as written there.
use lacuna_ir::Pattern;

lacuna_ir::pattern! {
    /// SCFA hash-bucketed attention: same bucket, causal on original positions.
    pub HashBucket(q_bucket: Q<i32>, k_bucket: K<i32>, q_pos: Q<i32>, k_pos: K<i32>) =
        q_bucket[q] == k_bucket[k] && q_pos[q] >= k_pos[k];

    /// Inclusive causal.
    pub Causal() = q >= k;

    pub(crate) MoaBand(alpha: H<i32>, beta: H<f32>, sink: H<i32>, N: i32) =
        k <= q && (q - k < alpha[h] + (beta[h] * N as f32) as i32 || k < sink[h]);

    pub TopK(sel: Blocks<64>, W: i32) = q >= k && (sel[q, k] || q - k < W);
}

fn main() {
    for ir in [HashBucket::ir(), Causal::ir(), MoaBand::ir(), TopK::ir()] {
        assert_eq!(lacuna_ir::verify(&ir), Ok(()));
    }
    assert_eq!(HashBucket::NAME, "HashBucket");
    assert_eq!(Causal::ir().doc(), "Inclusive causal.");
}
