//! One frame from disk to what any vision server can read, no larger than
//! needed: 8-bit JPEG and PNG frames that fit `--max-side` and need no
//! rotation are sent as they are (no re-encode); anything else (TIFF, WebP,
//! BMP, GIF, a 16-bit PNG, a 4000×3000 still, an EXIF-rotated photo) is
//! decoded, turned upright, downscaled to `--max-side` and sent as a JPEG. Blocking work: callers run
//! it on a blocking thread.

use std::io::Cursor;
use std::path::Path;

use base64::Engine;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, metadata::Orientation};

/// JPEG quality of a re-encoded frame.
const JPEG_QUALITY: u8 = 90;

/// A frame ready to send.
#[derive(Debug, Clone)]
pub struct LoadedFrame {
    pub data_uri: String,
    /// What the server gets (after rotation and downscaling).
    pub width: u32,
    pub height: u32,
    /// Whether it was re-encoded (not sent as the file is).
    pub transcoded: bool,
}

/// Why a frame cannot be sent: missing, unreadable, not an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

/// Reads `path` and makes it a frame the server can read, with its longest
/// side at most `max_side`.
pub fn prepare(path: &Path, max_side: u32) -> Result<LoadedFrame, FrameError> {
    prepare_bytes(&read(path)?, path, max_side)
}

/// Like [`prepare`], for a frame's bytes read already (stored in the
/// database by `enqueue --store-frames`); `path` names it in errors.
pub fn prepare_bytes(bytes: &[u8], path: &Path, max_side: u32) -> Result<LoadedFrame, FrameError> {
    let shown = path.display();
    let (format, mut decoder) = open(bytes, path)?;
    let (width, height) = decoder.dimensions();
    let orientation = orientation_of(decoder.as_mut());
    let eight_bit = decoder.color_type().bytes_per_pixel() == decoder.color_type().channel_count();
    let as_is = matches!(format, ImageFormat::Jpeg | ImageFormat::Png)
        && eight_bit
        && width.max(height) <= max_side
        && orientation == Orientation::NoTransforms;
    if as_is {
        // The whole file must decode, or the server would be the one to say so.
        DynamicImage::from_decoder(decoder).map_err(|e| undecodable(path, e))?;
        return Ok(LoadedFrame {
            data_uri: data_uri(format.to_mime_type(), bytes),
            width,
            height,
            transcoded: false,
        });
    }
    let rgb = downscale(upright(decoder, orientation, path)?, max_side);
    let jpeg = encode_jpeg(&rgb, JPEG_QUALITY)
        .map_err(|e| FrameError(format!("frame {shown}: cannot encode it as JPEG: {e}")))?;
    Ok(LoadedFrame {
        data_uri: data_uri("image/jpeg", &jpeg),
        width: rgb.width(),
        height: rgb.height(),
        transcoded: true,
    })
}

/// A small JPEG of a frame, for a contact sheet.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Qualities a thumbnail is tried at, best first, until it fits its budget.
const THUMBNAIL_QUALITIES: [u8; 4] = [75, 60, 45, 30];

/// The frame at `path` upright, its longest side at most `side`, as a JPEG
/// of at most `budget` bytes where the lowest quality allows (a grainy
/// frame costs more bytes than a clean one at the same quality).
pub fn thumbnail(path: &Path, side: u32, budget: usize) -> Result<Thumbnail, FrameError> {
    thumbnail_of(&read(path)?, path, side, budget)
}

/// Like [`thumbnail`], for a frame's bytes read already (stored in the
/// database); `path` names it in errors.
pub fn thumbnail_of(
    bytes: &[u8],
    path: &Path,
    side: u32,
    budget: usize,
) -> Result<Thumbnail, FrameError> {
    let (_, mut decoder) = open(bytes, path)?;
    let orientation = orientation_of(decoder.as_mut());
    let rgb = downscale(upright(decoder, orientation, path)?, side);
    let mut jpeg = Vec::new();
    for quality in THUMBNAIL_QUALITIES {
        jpeg = encode_jpeg(&rgb, quality).map_err(|e| {
            FrameError(format!(
                "frame {}: cannot encode a thumbnail: {e}",
                path.display()
            ))
        })?;
        if jpeg.len() <= budget {
            break;
        }
    }
    Ok(Thumbnail {
        jpeg,
        width: rgb.width(),
        height: rgb.height(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, FrameError> {
    std::fs::read(path).map_err(|e| {
        FrameError(match e.kind() {
            std::io::ErrorKind::NotFound => format!("frame {} does not exist", path.display()),
            _ => format!("frame {} cannot be read: {e}", path.display()),
        })
    })
}

/// The image's format and a decoder that has read its header.
fn open<'a>(
    bytes: &'a [u8],
    path: &Path,
) -> Result<(ImageFormat, Box<dyn ImageDecoder + 'a>), FrameError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .expect("reading from memory");
    let Some(format) = reader.format() else {
        return Err(FrameError(format!(
            "frame {} is not a decodable image (unknown format)",
            path.display()
        )));
    };
    let decoder = reader.into_decoder().map_err(|e| undecodable(path, e))?;
    Ok((format, Box::new(decoder)))
}

/// How the image must turn to be upright (EXIF); upright when unknown.
fn orientation_of(decoder: &mut dyn ImageDecoder) -> Orientation {
    decoder.orientation().unwrap_or(Orientation::NoTransforms)
}

/// The whole image, decoded and turned upright, as 8-bit RGB.
fn upright(
    decoder: Box<dyn ImageDecoder + '_>,
    orientation: Orientation,
    path: &Path,
) -> Result<image::RgbImage, FrameError> {
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| undecodable(path, e))?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

fn undecodable(path: &Path, e: image::ImageError) -> FrameError {
    FrameError(format!(
        "frame {} is not a decodable image: {e}",
        path.display()
    ))
}

fn encode_jpeg(rgb: &image::RgbImage, quality: u8) -> image::ImageResult<Vec<u8>> {
    let mut jpeg = Vec::with_capacity(rgb.as_raw().len() / 8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality).encode_image(rgb)?;
    Ok(jpeg)
}

/// `image` with its longest side at most `max_side` (aspect kept), with a
/// SIMD resizer; as it is when it already fits.
fn downscale(image: image::RgbImage, max_side: u32) -> image::RgbImage {
    let (w, h) = image.dimensions();
    let longest = w.max(h);
    if longest <= max_side {
        return image;
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let fit = |side: u32| ((f64::from(side) * scale).round() as u32).clamp(1, max_side);
    let (dw, dh) = (fit(w), fit(h));
    let mut out = image::RgbImage::new(dw, dh);
    fast_image_resize::Resizer::new()
        .resize(&image, &mut out, None)
        .expect("RGB8 into RGB8 of the same pixel type");
    out
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_path_map_rewrites_whole_components_and_the_longest_prefix_wins() {
        let map = super::PathMap::new(vec![
            super::PathMap::parse_pair("/mnt/films=/data/films").unwrap(),
            super::PathMap::parse_pair("/mnt/films/old/=/archive").unwrap(),
        ]);
        assert_eq!(map.apply("/mnt/films/a/1.jpg"), "/data/films/a/1.jpg");
        assert_eq!(map.apply("/mnt/films/old/1.jpg"), "/archive/1.jpg");
        assert_eq!(
            map.apply("/mnt/filmsX/1.jpg"),
            "/mnt/filmsX/1.jpg",
            "not a component"
        );
        assert_eq!(map.apply("/elsewhere/1.jpg"), "/elsewhere/1.jpg");
        assert!(super::PathMap::parse_pair("nonsense").is_err());
        assert!(super::PathMap::parse_pair("=/x").is_err());
    }

    use super::*;

    fn write(dir: &Path, name: &str, img: &DynamicImage) -> std::path::PathBuf {
        let p = dir.join(name);
        img.save(&p).unwrap();
        p
    }

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        }))
    }

    #[test]
    fn a_small_jpeg_or_png_goes_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.png", "a.jpg"] {
            let p = write(dir.path(), name, &gradient(64, 48));
            let f = prepare(&p, 1024).unwrap();
            assert!(!f.transcoded, "{name}");
            let sent = base64::engine::general_purpose::STANDARD
                .decode(f.data_uri.split_once(',').unwrap().1)
                .unwrap();
            assert_eq!(sent, std::fs::read(&p).unwrap(), "{name} byte for byte");
        }
    }

    #[test]
    fn other_formats_and_large_frames_become_jpegs_that_fit() {
        let dir = tempfile::tempdir().unwrap();
        let tiff = write(dir.path(), "a.tiff", &gradient(64, 48));
        let f = prepare(&tiff, 1024).unwrap();
        assert!(f.transcoded && f.data_uri.starts_with("data:image/jpeg;base64,"));
        assert_eq!((f.width, f.height), (64, 48));
        let big = write(dir.path(), "big.png", &gradient(4000, 3000));
        let f = prepare(&big, 1024).unwrap();
        assert_eq!((f.width, f.height), (1024, 768));
        let tall = write(dir.path(), "tall.png", &gradient(30, 900));
        let f = prepare(&tall, 300).unwrap();
        assert_eq!((f.width, f.height), (10, 300));
        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(20, 10, |x, _| {
            image::Rgb([x as u16 * 3000, 0, 65535])
        }));
        let f = prepare(&write(dir.path(), "deep.tiff", &deep), 1024).unwrap();
        assert_eq!((f.width, f.height), (20, 10));
        // Large PNGs of other layouts.
        let grey = DynamicImage::ImageLumaA16(image::ImageBuffer::from_fn(2000, 10, |x, _| {
            image::LumaA([x as u16 * 30, 65535])
        }));
        let f = prepare(&write(dir.path(), "grey.png", &grey), 1024).unwrap();
        assert_eq!((f.width, f.height), (1024, 5));
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            1500,
            20,
            image::Rgba([9, 8, 7, 128]),
        ));
        let f = prepare(&write(dir.path(), "rgba.png", &rgba), 1024).unwrap();
        assert_eq!((f.width, f.height), (1024, 14));
    }

    #[test]
    fn what_is_not_an_image_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.png");
        assert!(
            prepare(&missing, 1024)
                .unwrap_err()
                .0
                .contains("does not exist")
        );
        let text = dir.path().join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        assert!(
            prepare(&text, 1024)
                .unwrap_err()
                .0
                .contains("not a decodable image")
        );
        // A PNG cut short: its header reads, its pixels do not.
        let p = write(dir.path(), "cut.png", &gradient(64, 64));
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(prepare(&p, 1024).is_err());
    }
}

/// Where a worker finds frames that the database names by another path
/// (`--path-map FROM=TO`): shared storage mounted elsewhere on this host.
/// A path under FROM (FROM itself, or FROM followed by `/`) has that prefix
/// replaced by TO; the longest FROM that applies wins; other paths are
/// kept as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathMap(Vec<(String, String)>);

impl PathMap {
    pub fn new(mut pairs: Vec<(String, String)>) -> PathMap {
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        PathMap(pairs)
    }

    /// `FROM=TO`, both non-empty (trailing slashes dropped).
    pub fn parse_pair(s: &str) -> Result<(String, String), String> {
        let (from, to) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not FROM=TO (e.g. /mnt/films=/data/films)"))?;
        let trim = |p: &str| {
            let t = p.trim_end_matches('/');
            if t.is_empty() && p.starts_with('/') {
                "/".to_string()
            } else {
                t.to_string()
            }
        };
        let (from, to) = (trim(from), trim(to));
        if from.is_empty() || to.is_empty() {
            return Err(format!("{s:?}: FROM and TO must both be paths"));
        }
        Ok((from, to))
    }

    /// `path` as this host reaches it.
    pub fn apply<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        for (from, to) in &self.0 {
            if let Some(rest) = path.strip_prefix(from.as_str())
                && (rest.is_empty() || rest.starts_with('/') || from.ends_with('/'))
            {
                return format!("{to}{rest}").into();
            }
        }
        path.into()
    }
}
