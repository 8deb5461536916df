//! Pictures of a block mask: the text form (capped at a few (b, h) panels,
//! or heads side by side for `lacuna tour`) and a PNG with one small square
//! per tile. Computes nothing about the mask.

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use lacuna_ir::{BlockClass, BlockMask};

use crate::error::CliError;

/// The text pictures of the first `max_panels` (b, h) pairs, in `BlockMask`'s
/// own format, then a note on what was left out, then the counts for all pairs.
pub fn text(mask: &BlockMask, max_panels: usize) -> String {
    let panels = mask.dims.batch * mask.dims.heads;
    if panels <= max_panels {
        return mask.to_string();
    }
    let mut s = String::new();
    for i in 0..max_panels {
        let (b, h) = (i / mask.dims.heads, i % mask.dims.heads);
        let _ = writeln!(s, "b={b} h={h}  ({} x {} tiles of {} x {})", mask.q_blocks, mask.k_blocks, mask.tiles.block_q, mask.tiles.block_k);
        for row in mask.head(b, h).chunks(mask.k_blocks) {
            let line: String = row.iter().map(|c| c.symbol()).collect();
            let _ = writeln!(s, "  {line}");
        }
    }
    let _ = writeln!(s, "({} more (b, h) pictures omitted; the counts are for all {panels})", panels - max_panels);
    let c = mask.counts();
    let _ = writeln!(s, "tiles: {} empty (.), {} partial (+), {} full (#)", c.empty, c.partial, c.full);
    s
}

/// The heads of a one-batch mask drawn next to each other under `h=0 h=1 ...`,
/// then the counts; None when there is more than one batch or the row would
/// be wider than `max_width` characters (use [`text`] then).
pub fn heads_side_by_side(mask: &BlockMask, max_width: usize) -> Option<String> {
    let heads = mask.dims.heads;
    let labels: Vec<String> = (0..heads).map(|h| format!("h={h}")).collect();
    let col = labels.iter().map(String::len).max().unwrap_or(0).max(mask.k_blocks);
    if mask.dims.batch != 1 || 2 + heads * (col + 2) > max_width {
        return None;
    }
    let mut s = String::new();
    let row = |cells: Vec<String>| format!("  {}", cells.iter().map(|c| format!("{c:col$}")).collect::<Vec<_>>().join("  ")).trim_end().to_string();
    let _ = writeln!(s, "{}", row(labels));
    for qb in 0..mask.q_blocks {
        let cells = (0..heads)
            .map(|h| mask.head(0, h)[qb * mask.k_blocks..][..mask.k_blocks].iter().map(|c| c.symbol()).collect())
            .collect();
        let _ = writeln!(s, "{}", row(cells));
    }
    let c = mask.counts();
    let _ = writeln!(s, "tiles: {} empty (.), {} partial (+), {} full (#)", c.empty, c.partial, c.full);
    Some(s)
}

/// What `write_png` produced.
#[derive(Debug, Clone, Copy)]
pub struct PngInfo {
    pub width: u32,
    pub height: u32,
    pub tile_px: usize,
}

const EMPTY: [u8; 3] = [255, 255, 255];
const PARTIAL: [u8; 3] = [240, 150, 40];
const FULL: [u8; 3] = [40, 40, 48];
const GAP: [u8; 3] = [200, 205, 215];

/// Pictures beyond this many pixels at one pixel per tile are refused.
const MAX_PIXELS: usize = 1 << 26;
/// Preferred longest side; tiles shrink toward one pixel to stay under it.
const TARGET_SIDE: usize = 2048;

/// Draws the mask: a panel per (b, h), batches stacked, heads side by side,
/// a one-tile gap between panels; Empty white, Partial orange, Full dark.
pub fn write_png(mask: &BlockMask, path: &Path) -> Result<PngInfo, CliError> {
    let (batch, heads) = (mask.dims.batch, mask.dims.heads);
    let tiles_w = heads * mask.k_blocks + (heads - 1);
    let tiles_h = batch * mask.q_blocks + (batch - 1);
    if tiles_w.saturating_mul(tiles_h) > MAX_PIXELS || tiles_w > u32::MAX as usize || tiles_h > u32::MAX as usize {
        return Err(CliError::PictureTooLarge { width: tiles_w, height: tiles_h });
    }
    let tile_px = (TARGET_SIDE / tiles_w.max(tiles_h)).clamp(1, 8);
    let (width, height) = (tiles_w * tile_px, tiles_h * tile_px);
    let mut pixels = vec![0u8; width * height * 3];
    for ty in 0..tiles_h {
        for tx in 0..tiles_w {
            let (b, qb) = (ty / (mask.q_blocks + 1), ty % (mask.q_blocks + 1));
            let (h, kb) = (tx / (mask.k_blocks + 1), tx % (mask.k_blocks + 1));
            let color = if qb == mask.q_blocks || kb == mask.k_blocks {
                GAP
            } else {
                match mask.class(b, h, qb, kb) {
                    BlockClass::Empty => EMPTY,
                    BlockClass::Partial => PARTIAL,
                    BlockClass::Full => FULL,
                }
            };
            for py in ty * tile_px..(ty + 1) * tile_px {
                let row = &mut pixels[(py * width + tx * tile_px) * 3..][..tile_px * 3];
                for px in row.chunks_exact_mut(3) {
                    px.copy_from_slice(&color);
                }
            }
        }
    }
    let write_err = |source| CliError::WriteFile { path: path.to_path_buf(), source };
    let png_err = |source| CliError::Png { path: path.to_path_buf(), source };
    let file = File::create(path).map_err(write_err)?;
    let (width, height) = (width as u32, height as u32);
    let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(&pixels).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(PngInfo { width, height, tile_px })
}
