//! Runs the built `lacuna` binary and checks what a user sees: the block
//! mask of known patterns, the JSON form, brute-force checks, and errors.

use std::path::PathBuf;
use std::process::{Command, Output};

fn lacuna(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lacuna")).args(args).output().expect("the lacuna binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(test: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("lacuna-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

fn write_npy_i32(path: &PathBuf, shape: &[u64], data: &[i32]) {
    use npyz::WriterBuilder;
    let file = std::fs::File::create(path).expect("create npy");
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(std::io::BufWriter::new(file)).begin_nd().expect("npy header");
    w.extend(data.iter().copied()).expect("npy data");
    w.finish().expect("npy finish");
}

#[test]
fn causal_1024_has_8_partial_28_full_28_empty() {
    let o = lacuna(&["mask", "causal", "--q-len", "1024"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("tiles: 28 empty (.), 8 partial (+), 28 full (#)"), "{out}");
    let picture: Vec<&str> = out.lines().filter(|l| l.starts_with("  ") && l.trim().chars().all(|c| ".+#".contains(c))).map(str::trim).collect();
    let expected: Vec<String> = (0..8).map(|r| format!("{}+{}", "#".repeat(r), ".".repeat(7 - r))).collect();
    assert_eq!(picture, expected, "{out}");
    assert!(out.contains("key range: k in [0, q]"), "{out}");
}

#[test]
fn json_is_the_only_output_and_has_the_right_shape() {
    let o = lacuna(&["mask", "causal", "--q-len", "1024", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON value");
    assert_eq!(v["q_blocks"], 8);
    assert_eq!(v["k_blocks"], 8);
    assert_eq!(v["counts"]["empty"], 28);
    assert_eq!(v["counts"]["partial"], 8);
    assert_eq!(v["counts"]["full"], 28);
    let classes = v["classes"].as_array().expect("classes is a list");
    assert_eq!(classes.len(), 1, "one (b, h)");
    let rows = classes[0].as_array().expect("rows");
    assert_eq!(rows.len(), 8);
    for (qb, row) in rows.iter().enumerate() {
        let row: Vec<&str> = row.as_array().expect("row").iter().map(|c| c.as_str().expect("letter")).collect();
        assert_eq!(row.len(), 8);
        for (kb, c) in row.iter().enumerate() {
            let want = if kb < qb { "F" } else if kb == qb { "P" } else { "E" };
            assert_eq!(*c, want, "tile ({qb}, {kb})");
        }
    }
}

#[test]
fn json_covers_every_head() {
    let o = lacuna(&["mask", "causal", "--q-len", "300", "--kv-len", "200", "--heads", "3", "--batch", "2", "--block-k", "64", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!((v["q_blocks"].as_u64(), v["k_blocks"].as_u64()), (Some(3), Some(4)));
    let classes = v["classes"].as_array().expect("classes");
    assert_eq!(classes.len(), 6);
    let total: u64 = ["empty", "partial", "full"].iter().map(|k| v["counts"][k].as_u64().expect("count")).sum();
    assert_eq!(total, 6 * 3 * 4);
}

#[test]
fn hash_bucket_check_is_sound() {
    let o = lacuna(&["mask", "hash-bucket", "--q-len", "1024", "--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("unsound: 0 empty tiles that attend, 0 full tiles that mask"), "{out}");
    assert!(out.contains("input q_bucket: Q<i32> i32 array [1, 1, 1024] (example, seed 0)"), "{out}");
}

#[test]
fn check_refuses_huge_problems() {
    let o = lacuna(&["mask", "causal", "--q-len", "65536", "--heads", "8", "--check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--check evaluates every element"), "{}", stderr(&o));
}

#[test]
fn many_heads_print_four_pictures_and_count_all() {
    let o = lacuna(&["mask", "causal", "--q-len", "1024", "--heads", "6"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("b=0 h=").count(), 4, "{out}");
    assert!(out.contains("2 more (b, h) pictures omitted"), "{out}");
    assert!(out.contains("tiles: 168 empty (.), 48 partial (+), 168 full (#)"), "{out}");
}

#[test]
fn missing_input_file_names_the_input_and_the_file() {
    let dir = temp_dir("missing");
    let path = dir.join("nowhere.npy");
    let arg = format!("q_pos={}", path.display());
    let o = lacuna(&["mask", "hash-bucket", "--q-len", "1024", "--input", &arg]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("input `q_pos`"), "{err}");
    assert!(err.contains("nowhere.npy"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn misshaped_npy_names_input_file_expected_and_found() {
    let dir = temp_dir("misshaped");
    let path = dir.join("q_pos.npy");
    write_npy_i32(&path, &[1, 1, 512], &(0..512).collect::<Vec<i32>>());
    let arg = format!("q_pos={}", path.display());
    let o = lacuna(&["mask", "hash-bucket", "--q-len", "1024", "--input", &arg]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("input `q_pos`"), "{err}");
    assert!(err.contains("q_pos.npy"), "{err}");
    assert!(err.contains("(B, H, Nq) i32 = [1, 1, 1024]"), "{err}");
    assert!(err.contains("[1, 1, 512]"), "{err}");
}

#[test]
fn wrong_dtype_npy_says_how_to_convert() {
    let dir = temp_dir("dtype");
    let path = dir.join("k_pos.npy");
    {
        use npyz::WriterBuilder;
        let file = std::fs::File::create(&path).expect("create");
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[1, 1, 1024]).writer(std::io::BufWriter::new(file)).begin_nd().expect("header");
        w.extend(0..1024i64).expect("data");
        w.finish().expect("finish");
    }
    let arg = format!("k_pos={}", path.display());
    let o = lacuna(&["mask", "qk-drop", "--q-len", "1024", "--input", &arg]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("input `k_pos`") && err.contains("k_pos.npy"), "{err}");
    assert!(err.contains("'<i8'") && err.contains("astype(numpy.int32)"), "{err}");
}

#[test]
fn npy_inputs_are_used() {
    // qk-drop with nothing dropped (positions 0..N) is plain causal.
    let dir = temp_dir("good");
    let (q, k) = (dir.join("q.npy"), dir.join("k.npy"));
    let pos: Vec<i32> = (0..1024).collect();
    write_npy_i32(&q, &[1, 1, 1024], &pos);
    write_npy_i32(&k, &[1, 1, 1024], &pos);
    let (qa, ka) = (format!("q_pos={}", q.display()), format!("k_pos={}", k.display()));
    let o = lacuna(&["mask", "qk-drop", "--q-len", "1024", "--input", &qa, "--input", &ka, "--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("tiles: 28 empty (.), 8 partial (+), 28 full (#)"), "{out}");
    assert!(out.contains("q.npy)"), "{out}");
    assert!(out.contains("imprecise: 0 partial tiles really empty, 0 partial tiles really full"), "{out}");
}

#[test]
fn params_bind_head_arrays_and_scalars() {
    let o = lacuna(&["mask", "moa", "--q-len", "512", "--heads", "2", "--param", "alpha=128,256", "--param", "beta=0", "--param", "sink=0", "--param", "N=512", "--block-q", "64", "--block-k", "64", "--check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("input alpha: H<i32> = [128, 256] (from --param)"), "{out}");
    assert!(out.contains("input beta: H<f32> = [0, 0] (from --param)"), "{out}");
    assert!(out.contains("unsound: 0"), "{out}");
    // A band of 128 keys with 64-row tiles touches 3 tiles per query-block row at most.
    let h0: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("b=0 h=0")).skip(1).take(8).collect();
    assert!(h0.iter().all(|row| row.trim().chars().filter(|c| *c != '.').count() <= 3), "{out}");

    let o = lacuna(&["mask", "moa", "--q-len", "512", "--heads", "2", "--param", "alpha=1,2,3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("3 values but there are 2 heads"), "{}", stderr(&o));
}

#[test]
fn unknown_param_lists_what_is_accepted() {
    let o = lacuna(&["mask", "sliding-window", "--q-len", "256", "--param", "window=64"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("no input or knob `window`") && err.contains("W (scalar i32)"), "{err}");
}

#[test]
fn png_is_written() {
    let dir = temp_dir("png");
    let path = dir.join("mask.png");
    let o = lacuna(&["mask", "causal", "--q-len", "1024", "--heads", "2", "--png", path.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&path).expect("png written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let height = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
    // Two 8x8 panels side by side with a one-tile gap, 8 pixels per tile.
    assert_eq!((width, height), (17 * 8, 8 * 8));
}

#[test]
fn patterns_lists_every_standard_name() {
    let o = lacuna(&["patterns"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let names: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ') && !l.is_empty()).filter_map(|l| l.split_whitespace().next()).collect();
    for name in ["causal", "causal-strict", "sliding-window", "qk-drop", "hash-bucket", "hash-bucket-strict", "topk", "moa", "causal-decode", "moa-decode"] {
        assert!(names.contains(&name), "{name} missing from:\n{out}");
    }
    assert!(out.contains("q_bucket: Q<i32>  (B, H, Nq) i32"), "{out}");
    assert!(out.contains("buckets"), "{out}");
}

#[test]
fn ir_moa_prints_text_hash_and_key_range() {
    let o = lacuna(&["ir", "moa"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("pattern Moa(alpha: H<i32>, beta: H<f32>, sink: H<i32>, N: i32)"), "{out}");
    assert!(out.contains("= load alpha[h] : i32"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("  mask %")), "{out}");
    let hash = out.lines().find_map(|l| l.strip_prefix("content hash: ")).expect("hash line");
    assert!(hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert!(out.contains("key range: k in ["), "{out}");
    assert!(out.contains("verify: ok"), "{out}");
}

#[test]
fn unknown_pattern_lists_the_names() {
    let o = lacuna(&["ir", "casual"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("`casual`") && err.contains("causal, causal-strict"), "{err}");
}

#[test]
fn f32_head_input_reads_an_f32_npy() {
    use npyz::WriterBuilder;
    let dir = temp_dir("f32");
    let path = dir.join("beta.npy");
    {
        let file = std::fs::File::create(&path).expect("create");
        let mut w = npyz::WriteOptions::new().default_dtype().shape(&[2]).writer(std::io::BufWriter::new(file)).begin_nd().expect("header");
        w.extend([0.25f32, 0.5]).expect("data");
        w.finish().expect("finish");
    }
    let arg = format!("beta={}", path.display());
    let o = lacuna(&["mask", "moa", "--q-len", "256", "--heads", "2", "--input", &arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("input beta: H<f32> = [0.25, 0.5] (from "), "{}", stdout(&o));
    // The same file for an i32 input is refused with the dtype found.
    let arg = format!("alpha={}", path.display());
    let o = lacuna(&["mask", "moa", "--q-len", "256", "--heads", "2", "--input", &arg]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds dtype '<f4', expected i32"), "{}", stderr(&o));
}

/// The manifest a self-describing PTX file starts with, parsed.
fn manifest_of(ptx: &str) -> serde_json::Value {
    let first = ptx.lines().next().unwrap_or_default();
    let json = first.strip_prefix("// lacuna-manifest: ").unwrap_or_else(|| panic!("first line is not the manifest: {first}"));
    serde_json::from_str(json).expect("the manifest line is JSON")
}

/// Decoding: a few query rows take short-row tiles at any key length, and
/// the module says it holds the split-KV entry and its combine kernel.
#[test]
fn compile_plans_decoding_on_short_rows_with_split_kv() {
    let plan = |extra: &[&str]| {
        let mut a = vec!["compile", "causal-decode", "--head-dim", "64", "--kv-len", "32768", "--emit", "plan"];
        a.extend_from_slice(extra);
        let o = lacuna(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let one = plan(&["--q-len", "1"]);
    assert!(one.contains("  tile: block_q 64 x block_k 64 (shaped for short rows)\n"), "{one}");
    assert!(one.contains("split-KV: entry fwd_causal_decode_d64_bf16_split") && one.contains("fwd_causal_decode_d64_bf16_combine"), "{one}");
    let prefill = plan(&["--q-len", "4096"]);
    assert!(prefill.contains("(shaped for long rows)"), "{prefill}");
}

#[test]
fn compile_emit_plan_prints_the_plan() {
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--emit", "plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("kernel plan: sm_90a bf16, head_dim 64\n"), "{out}");
    assert!(out.contains("  tile: block_q 128 x block_k 64 (shaped for long rows)\n"), "{out}");
    assert!(out.contains("  tensor cores: wgmma m64n64k16 (S) and m64n64k16 (O) per warpgroup, 2 warpgroups\n"), "{out}");
    assert!(out.contains("  key source: closed form, k in [0, q]"), "{out}");
    // The mma.sync path on request, with its own default tiles.
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--mma", "sync", "--emit", "plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("  tile: block_q 128 x block_k 64 (shaped for long rows)\n") && out.contains("warps: 4 (128 threads)") && out.contains("mma.sync m16n8k16"), "{out}");
    // wgmma where it cannot run is an error that says so.
    let o = lacuna(&["compile", "causal", "--head-dim", "96", "--mma", "wgmma", "--emit", "plan"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs sm_90a and head_dim 64 or 128"), "{}", stderr(&o));
    // No PTX on stdout for the plan stage.
    assert!(!out.contains(".entry") && !out.contains("lacuna-manifest"), "{out}");

    // Tiles for the other row length on request; MoA's kernel takes a head order.
    let o = lacuna(&["compile", "qk-drop", "--head-dim", "64", "--rows", "long", "--emit", "plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("  tile: block_q 128 x block_k 64 (shaped for long rows)\n"), "{}", stdout(&o));
    let o = lacuna(&["compile", "moa", "--head-dim", "64", "--emit", "plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out_moa = stdout(&o);
    assert!(out_moa.contains("(shaped for short rows)") && out_moa.contains("  heads: in the launch's head_order"), "{out_moa}");
    let o = lacuna(&["compile", "moa", "--head-dim", "64", "--rows", "medium"]);
    assert!(!o.status.success() && stderr(&o).contains("use long or short"), "{}", stderr(&o));

    // Overrides replace the planner's fields and are re-checked.
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--emit", "plan", "--block-k", "32", "--stages", "2", "--dtype", "fp16", "--arch", "sm_80"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("kernel plan: sm_80 fp16, head_dim 64\n"), "{out}");
    assert!(out.contains("block_k 32") && out.contains("pipeline: 2 stages"), "{out}");
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--emit", "plan", "--warps", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid kernel plan"), "{}", stderr(&o));
}

#[test]
fn compile_ptx_to_a_file_carries_the_manifest_and_the_entry() {
    let dir = temp_dir("compile-ptx");
    let path = dir.join("hash_bucket.ptx");
    let o = lacuna(&["compile", "hash-bucket", "--head-dim", "128", "--emit", "ptx", "-o", path.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ptx = std::fs::read_to_string(&path).expect("PTX written");
    let m = manifest_of(&ptx);
    assert_eq!(m["head_dim"], 128);
    assert_eq!(m["arch"], "Sm90a");
    assert_eq!(m["dtype"], "Bf16");
    assert_eq!(m["key_source"], "Scan", "hash-bucket has no closed-form key range");
    let entry = m["entry"].as_str().expect("entry name");
    let summary = m["summary_entry"].as_str().expect("summary entry name");
    assert!(ptx.contains(&format!(".entry {entry}(")), "no `.entry {entry}(` in the PTX");
    assert!(ptx.contains(&format!(".entry {summary}(")), "no `.entry {summary}(` in the PTX");
    assert!(ptx.lines().any(|l| l.trim() == ".target sm_90a"), "no `.target sm_90a` line");
    assert_eq!(m["params"].as_array().map(Vec::len), Some(4), "four pattern inputs");
    // stdout says where the file went, and carries no PTX.
    let out = stdout(&o);
    assert!(out.contains("hash_bucket.ptx") && out.contains(entry), "{out}");
    assert!(!out.contains(".entry"), "{out}");
}

#[test]
fn compile_refuses_bad_head_dims_and_names() {
    for d in ["72", "264"] {
        let o = lacuna(&["compile", "causal", "--head-dim", d]);
        assert_eq!(o.status.code(), Some(2), "head dim {d}");
        let err = stderr(&o);
        assert!(err.starts_with("error: cannot compile `causal` with head_dim "), "{err}");
        assert!(err.contains(&format!("head_dim {d} is not supported")) && err.contains("multiple of 16"), "{err}");
        assert!(o.stdout.is_empty());
    }
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--dtype", "fp8"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown dtype `fp8`; use bf16 or fp16"), "{}", stderr(&o));
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--arch", "sm_75"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown arch `sm_75`") && stderr(&o).contains("sm_90a"), "{}", stderr(&o));
}

#[test]
fn tour_without_ptxas_writes_a_ptx_per_pattern_and_head_dim() {
    let dir = temp_dir("tour");
    let o = lacuna(&["tour", "--no-ptxas", "--q-len", "256", "--out", dir.0.to_str().expect("utf-8 path")]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    let out = stdout(&o);
    let names = ["causal", "causal-strict", "sliding-window", "qk-drop", "hash-bucket", "hash-bucket-strict", "topk", "moa", "causal-decode", "moa-decode"];
    for name in names {
        assert!(out.contains(&format!("\n== {name}: ")), "no section for {name}:\n{out}");
        for d in [64, 128] {
            let path = dir.join(&format!("{name}_d{d}.ptx"));
            let ptx = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let m = manifest_of(&ptx);
            assert_eq!(m["head_dim"], d, "{}", path.display());
            let entry = m["entry"].as_str().expect("entry name");
            assert!(ptx.contains(&format!(".entry {entry}(")), "{}", path.display());
            // The summary table has one row per kernel, with the file's size.
            let row = out.lines().find(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&name) && cells.get(1) == Some(&d.to_string().as_str())
            });
            let row = row.unwrap_or_else(|| panic!("no summary row for {name} D={d}:\n{out}"));
            assert!(row.ends_with(&format!(" {}", ptx.len())), "{row}");
        }
    }
    assert_eq!(out.matches("unsound: 0 empty tiles that attend, 0 full tiles that mask").count(), names.len(), "{out}");
    assert!(out.contains("ptxas:       skipped (--no-ptxas)"), "{out}");
    // Causal at N=256 with 128-row tiles: per head, one full tile and two partial ones.
    assert!(out.contains("tiles: 2 empty (.), 4 partial (+), 2 full (#)"), "{out}");
}

#[test]
fn tour_assembles_with_ptxas_or_says_how_to_install_it() {
    let dir = temp_dir("tour-ptxas");
    let o = lacuna(&["tour", "--q-len", "128", "--out", dir.0.to_str().expect("utf-8 path")]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}\n{out}", stderr(&o));
    if out.contains("ptxas:       not found") {
        // Without ptxas the tour still succeeds, says how to get it, and has no registers column.
        assert!(out.contains("`./dev test` installs it"), "{out}");
        assert!(!out.contains("registers"), "{out}");
        return;
    }
    // Every standard pattern at D = 64 and 128.
    let kernels = 2 * lacuna_patterns::standard().len();
    assert_eq!(out.matches(" registers, no spills, shared 0 B static + ").count(), kernels, "{out}");
    let header = out.lines().find(|l| l.trim_start().starts_with("pattern ") && l.contains("registers")).expect("summary header");
    assert!(header.contains("spills st/ld"), "{header}");
    let rows: Vec<Vec<&str>> = out.lines().skip_while(|l| *l != header).skip(1).map(|l| l.split_whitespace().collect()).take_while(|c: &Vec<&str>| c.len() == 6).collect();
    assert_eq!(rows.len(), kernels, "{out}");
    for cells in rows {
        let registers: u32 = cells[3].parse().unwrap_or_else(|_| panic!("registers in {cells:?}"));
        assert!((1..=255).contains(&registers), "{cells:?}");
        assert_eq!(cells[4], "0/0", "{cells:?}");
    }
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &PathBuf, shape: &[u64], data: &[T]) {
    use npyz::WriterBuilder;
    let file = std::fs::File::create(path).expect("create npy");
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(std::io::BufWriter::new(file)).begin_nd().expect("npy header");
    w.extend(data.iter().copied()).expect("npy data");
    w.finish().expect("npy finish");
}

/// Q, K (Nk = 48 as k48) and V files for the pipeline tests, (1, 2, N, D).
fn qkv_files(dir: &TempDir, d: u64) -> [String; 4] {
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_string();
    write_npy(&dir.join("q.npy"), &[1, 2, 64, d], &vec![0.5f32; (2 * 64 * d) as usize]);
    write_npy(&dir.join("k.npy"), &[1, 2, 64, d], &vec![0.25f32; (2 * 64 * d) as usize]);
    write_npy(&dir.join("k48.npy"), &[1, 2, 48, d], &vec![0.25f32; (2 * 48 * d) as usize]);
    [path("q.npy"), path("k.npy"), path("k48.npy"), path("o.npy")]
}

/// Runs `lacuna run` and returns stderr, asserting it failed with exit code 2.
fn run_fails(args: &[&str]) -> String {
    let o = lacuna(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?} should fail: {err}{}", stdout(&o));
    err
}

#[test]
fn run_hash_bucket_pipeline_refuses_bad_arguments_before_the_gpu() {
    let dir = temp_dir("run-hash-args");
    let [q, k, k48, out] = qkv_files(&dir, 64);
    let b = dir.join("b.npy");
    write_npy_i32(&b, &[1, 2, 64], &[0; 128]);
    let b = b.to_str().expect("utf-8 path");
    let base = ["run", "hash-bucket", "--q", &q, "--k", &k, "--v", &k, "--out", &out];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let fails = |extra: &[&str]| {
        let args = with(extra);
        run_fails(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let err = fails(&["--param", "buckets=3"]);
    assert!(err.contains("buckets=3") && err.contains("even"), "{err}");
    let err = fails(&["--param", "buckets=lots"]);
    assert!(err.contains("buckets=lots"), "{err}");
    let err = fails(&["--param", "strict=2"]);
    assert!(err.contains("strict=2") && err.contains("1 (on) or 0 (off)"), "{err}");
    let err = fails(&["--param", "colour=1"]);
    assert!(err.contains("no parameter `colour`") && err.contains("buckets") && err.contains("shared_qk"), "{err}");
    let err = fails(&["--scale", "0.1"]);
    assert!(err.contains("--scale") && err.contains("1/sqrt(D)"), "{err}");
    let err = fails(&["--seed", "4", "--param", "seed=3"]);
    assert!(err.contains("given twice"), "{err}");
    // Some of the pattern's own inputs but not all four.
    let err = fails(&["--input", &format!("q_bucket={b}")]);
    assert!(err.contains("missing: k_bucket, q_pos, k_pos") && err.contains("Give none of them"), "{err}");
    // An input that belongs to another method.
    let err = fails(&["--input", &format!("q_keep={b}")]);
    assert!(err.contains("`--input q_keep`") && err.contains("reads only --q, --k and --v"), "{err}");
    // Pipeline knobs with the explicit (sorted) inputs.
    let all: Vec<String> = ["q_bucket", "k_bucket", "q_pos", "k_pos"].iter().map(|n| format!("{n}={b}")).collect();
    let mut extra: Vec<&str> = all.iter().flat_map(|a| ["--input", a.as_str()]).collect();
    extra.extend(["--param", "seed=3"]);
    let err = fails(&extra);
    assert!(err.contains("`--param seed` belongs to the full pipeline"), "{err}");
    // Shared-QK needs Nq = Nk.
    let err = run_fails(&["run", "hash-bucket", "--q", &q, "--k", &k48, "--v", &k48, "--out", &out, "--param", "shared_qk=1"]);
    assert!(err.contains("Nq = 64 and Nk = 48"), "{err}");
    // The strict pattern cannot be made inclusive.
    let err = run_fails(&["run", "hash-bucket-strict", "--q", &q, "--k", &k, "--v", &k, "--out", &out, "--param", "strict=0"]);
    assert!(err.contains("contradicts"), "{err}");
    // A head_dim the kernels do not support, before the GPU.
    let dir72 = temp_dir("run-hash-d72");
    let [q72, k72, _, out72] = qkv_files(&dir72, 72);
    let err = run_fails(&["run", "hash-bucket", "--q", &q72, "--k", &k72, "--v", &k72, "--out", &out72]);
    assert!(err.contains("head_dim 72"), "{err}");
    // Valid arguments get as far as the GPU (or run, where there is one).
    let o = lacuna(&base);
    if o.status.success() {
        assert!(stdout(&o).contains("hash-bucket pipeline on") && dir.join("o.npy").exists(), "{}", stdout(&o));
    } else {
        let err = stderr(&o);
        assert!(err.contains("CUDA") || err.contains("NVRTC") || err.contains("GPU"), "{err}");
    }
}

#[test]
fn run_qk_drop_pipeline_refuses_bad_keep_masks_before_the_gpu() {
    let dir = temp_dir("run-qkdrop-args");
    let [q, k, _, out] = qkv_files(&dir, 64);
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_string();
    write_npy(&dir.join("qk.npy"), &[1, 2, 64], &[1u8; 128]);
    write_npy_i32(&dir.join("kk.npy"), &[1, 2, 64], &[1; 128]);
    write_npy(&dir.join("heads3.npy"), &[1, 3, 64], &[1u8; 192]);
    write_npy(&dir.join("f32.npy"), &[1, 2, 64], &[1f32; 128]);
    let (qk, kk, heads3, f32m) = (format!("q_keep={}", path("qk.npy")), format!("k_keep={}", path("kk.npy")), path("heads3.npy"), path("f32.npy"));
    let base = ["run", "qk-drop", "--q", q.as_str(), "--k", k.as_str(), "--v", k.as_str(), "--out", out.as_str()];
    let fails = |extra: &[&str]| run_fails(&base.iter().chain(extra).copied().collect::<Vec<_>>());

    let err = fails(&["--input", &qk]);
    assert!(err.contains("needs both keep masks") && err.contains("`k_keep` is missing"), "{err}");
    let err = fails(&["--input", &qk, "--input", &kk, "--input", &format!("q_pos={}", path("kk.npy"))]);
    assert!(err.contains("do not mix"), "{err}");
    let err = fails(&["--input", &qk, "--input", &kk, "--param", "drop=0.5"]);
    assert!(err.contains("takes no --param"), "{err}");
    let err = fails(&["--input", &qk, "--input", &kk, "--scale", "0.2"]);
    assert!(err.contains("--scale"), "{err}");
    let err = fails(&["--input", &format!("q_keep={heads3}"), "--input", &kk]);
    assert!(err.contains("q_keep") && err.contains("[1, 3, 64]") && err.contains("(1, 2, 64)"), "{err}");
    let err = fails(&["--input", &qk, "--input", &format!("k_keep={f32m}")]);
    assert!(err.contains("k_keep") && err.contains("bool, uint8 or int32"), "{err}");
    let err = fails(&["--input", &qk, "--input", &format!("k_keep={}", path("nothing.npy"))]);
    assert!(err.contains("cannot open the k_keep file"), "{err}");
    let err = fails(&["--input", &qk, "--input", &kk, "--input", &format!("extra={}", path("kk.npy"))]);
    assert!(err.contains("`--input extra`"), "{err}");
    // Valid arguments get as far as the GPU (or run, where there is one).
    let o = lacuna(&base.iter().chain(&["--input", qk.as_str(), "--input", kk.as_str()]).copied().collect::<Vec<_>>());
    if o.status.success() {
        assert!(stdout(&o).contains("qk-drop pipeline on") && dir.join("o.npy").exists(), "{}", stdout(&o));
    } else {
        let err = stderr(&o);
        assert!(err.contains("CUDA") || err.contains("NVRTC") || err.contains("GPU"), "{err}");
    }
}

#[test]
fn bench_methods_refuses_bad_arguments_before_the_gpu() {
    let o = lacuna(&["bench-methods", "--methods", "hash,colour"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--methods colour: unknown; choose from dense, hash, qkdrop, moa, sparsek"), "{}", stderr(&o));
    let o = lacuna(&["bench-methods", "--ns", "64"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--ns 64"), "{}", stderr(&o));
}

#[test]
fn compile_shapes_tiles_for_the_key_length() {
    let plan = |args: &[&str]| {
        let o = lacuna(&[&["compile", "causal", "--emit", "plan"][..], args].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    assert!(plan(&["--head-dim", "64"]).contains("block_q 128 x block_k 64 (shaped for long rows)"));
    assert!(plan(&["--head-dim", "64", "--kv-len", "4096"]).contains("block_q 64 x block_k 64 (shaped for short rows)"));
    assert!(plan(&["--head-dim", "64", "--kv-len", "8192"]).contains("(shaped for long rows)"));
    assert!(plan(&["--head-dim", "128", "--kv-len", "8192"]).contains("block_q 64 x block_k 48 (shaped for short rows)"));
    // An explicit row length wins over the key length.
    assert!(plan(&["--head-dim", "128", "--kv-len", "1024", "--rows", "long"]).contains("(shaped for long rows)"));
    // Without a length, the plan lists what each length class would take.
    let classes = plan(&["--head-dim", "64"]);
    assert!(classes.contains("key-length classes (compile one kernel per class with --kv-len N):\n  1-4096 keys: 64x64 tiles, 4 warps, 2 stages (short rows)"), "{classes}");
    assert!(classes.contains("  4097 keys and more: 128x64 tiles, 8 warps, 3 stages (long rows)"), "{classes}");
    assert!(!plan(&["--head-dim", "64", "--kv-len", "4096"]).contains("key-length classes"));
    // The SCFA QK-drop pipeline's kernel (rows through indices, long rows): short tiles up to 4K keys.
    let o = lacuna(&["compile", "qk-drop", "--head-dim", "128", "--row-index", "--emit", "plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--kv-len", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a key length"), "{}", stderr(&o));
}

#[test]
fn block_lists_plan_short_rows_and_a_shared_bitmap() {
    // Top-k: a bounded number of listed blocks per query block, so short
    // rows at every length, and the list read through a bitmap in shared
    // memory sized at launch.
    let o = lacuna(&["compile", "topk", "--head-dim", "64", "--emit", "plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = stdout(&o);
    assert!(plan.contains("block_q 64 x block_k 64 (shaped for short rows)"), "{plan}");
    assert!(plan.contains("block list: a bitmap of 1 list row(s) in shared memory after the"), "{plan}");
    assert!(!plan.contains("(long rows)"), "{plan}");
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--emit", "plan"]);
    assert!(!stdout(&o).contains("block list"), "{}", stdout(&o));
}

#[test]
fn grid_order_can_be_chosen_and_a_wrong_one_is_named() {
    let o = lacuna(&["compile", "moa", "--head-dim", "64", "--grid", "heaviest-first", "--emit", "plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = stdout(&o);
    assert!(plan.contains("grid: (B·H, query blocks), query blocks last first"), "{plan}");
    let o = lacuna(&["compile", "moa", "--head-dim", "64", "--grid", "rank-major", "--emit", "plan"]);
    assert!(stdout(&o).contains("grid: (H, B, query blocks), query blocks last first"), "{}", stdout(&o));
    let o = lacuna(&["compile", "moa", "--head-dim", "64", "--emit", "plan"]);
    let plan = stdout(&o);
    assert!(plan.contains("grid: (query blocks, H, B), query blocks in order"), "the planner's choice for bands: {plan}");
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--grid", "diagonal"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("unknown grid order `diagonal`") && err.contains("head-major, rank-major or heaviest-first"), "{err}");
    // Head sections were measured slower than the planner's grids and removed.
    let o = lacuna(&["compile", "causal", "--head-dim", "64", "--grid", "head-sections"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown grid order `head-sections`"), "{}", stderr(&o));
}

#[test]
fn the_runtime_s_sm_clock_probe_assembles() {
    // Hand-written PTX outside the code generator: ptxas checks it here, as
    // it checks every generated kernel.
    let report = lacuna_codegen::ptxas::assemble(lacuna_runtime::clock::PROBE_PTX, lacuna_ir::Arch::Sm80).expect("ptxas accepts the clock probe");
    assert!(report.entry("lacuna_sm_clock").is_some(), "{report:?}");
}
