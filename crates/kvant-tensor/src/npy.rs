//! NumPy `.npy` and `.npz` files.
//!
//! `.npy` versions 1.0 to 3.0 are read; version 1.0 is written (2.0 when the header needs it).
//! Only C-order arrays of the numeric and bool types are supported; `bfloat16` has no NumPy
//! type and is refused. `.npz` members may be stored or deflated.

use crate::{DType, Element, Tensor, TensorData, TensorError};
use half::f16;
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

fn format_err(path: &str, reason: impl Into<String>) -> TensorError {
    TensorError::Format {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn descr_of(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I16 => "<i2",
        DType::U16 => "<u2",
        DType::I32 => "<i4",
        DType::U32 => "<u4",
        DType::I64 => "<i8",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
        _ => return None,
    })
}

fn dtype_of(descr: &str) -> Option<DType> {
    // Byte order '=' and '<' are little-endian on every machine kvant runs on; '|' means
    // "not applicable" for one-byte types.
    let (order, code) = descr.split_at(1);
    if !matches!(order, "<" | "|" | "=") {
        return None;
    }
    Some(match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "i2" => DType::I16,
        "u2" => DType::U16,
        "i4" => DType::I32,
        "u4" => DType::U32,
        "i8" => DType::I64,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ => return None,
    })
}

/// Finds `'key': value` in a NumPy header dict and returns the raw value text.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("'{key}':");
    let start = header.find(&pattern)? + pattern.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Parses one `.npy` file's bytes; `path` names it in errors.
pub fn parse_npy(bytes: &[u8], path: &str) -> Result<Tensor, TensorError> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(format_err(path, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(format_err(path, "truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format_err(path, format!("unsupported .npy version {v}"))),
    };
    let header_end = header_start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| format_err(path, "truncated header"))?;
    let header = std::str::from_utf8(&bytes[header_start..header_end])
        .map_err(|_| format_err(path, "header is not text"))?;
    let descr = header_value(header, "descr")
        .ok_or_else(|| format_err(path, "header has no 'descr'"))?
        .trim_matches(|c| c == '\'' || c == '"');
    let dtype = dtype_of(descr)
        .ok_or_else(|| format_err(path, format!("unsupported NumPy dtype '{descr}'")))?;
    if header_value(header, "fortran_order") == Some("True") {
        return Err(format_err(path, "Fortran-order arrays are not supported"));
    }
    let shape_text =
        header_value(header, "shape").ok_or_else(|| format_err(path, "header has no 'shape'"))?;
    let shape = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format_err(path, format!("bad shape {shape_text}")))?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_err(path, "shape overflows"))?;
    let payload = &bytes[header_end..];
    let need = n
        .checked_mul(dtype.bits() / 8)
        .ok_or_else(|| format_err(path, "shape overflows"))?;
    if payload.len() < need {
        return Err(format_err(
            path,
            format!(
                "data is truncated: {} bytes for {n} elements of {dtype}",
                payload.len()
            ),
        ));
    }
    let data = decode_le(dtype, &payload[..need]);
    Tensor::new(shape, data)
}

/// Decodes little-endian bytes into typed data (for the types `.npy` and ONNX raw_data share).
pub fn decode_le(dtype: DType, bytes: &[u8]) -> TensorData {
    macro_rules! le {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        };
    }
    match dtype {
        DType::F32 => le!(f32, F32),
        DType::F64 => le!(f64, F64),
        DType::I8 => le!(i8, I8),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::I16 => le!(i16, I16),
        DType::U16 => le!(u16, U16),
        DType::I32 => le!(i32, I32),
        DType::U32 => le!(u32, U32),
        DType::I64 => le!(i64, I64),
        DType::U64 => le!(u64, U64),
        DType::F16 => TensorData::F16(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        DType::BF16 => TensorData::BF16(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::String => TensorData::String(Vec::new()),
        packed => TensorData::Packed {
            dtype: packed,
            bytes: bytes.to_vec(),
        },
    }
}

/// Encodes typed data as little-endian bytes (strings are not representable: empty result).
pub fn encode_le(data: &TensorData) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match data {
        TensorData::F32(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::I8(v) => le!(v),
        TensorData::U8(v) => v.clone(),
        TensorData::I16(v) => le!(v),
        TensorData::U16(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        TensorData::String(_) => Vec::new(),
        TensorData::Packed { bytes, .. } => bytes.clone(),
    }
}

/// Serializes a tensor as `.npy` bytes.
pub fn to_npy_bytes(tensor: &Tensor) -> Result<Vec<u8>, TensorError> {
    let descr = descr_of(tensor.dtype()).ok_or(TensorError::Unsupported {
        op: "writing .npy".into(),
        dtype: tensor.dtype(),
    })?;
    let shape = match tensor.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    let pre = MAGIC.len() + 2 + 2;
    let total = (pre + header.len() + 1).div_ceil(64) * 64;
    if total - pre > u16::MAX as usize {
        let pre = MAGIC.len() + 2 + 4;
        let total = (pre + header.len() + 1).div_ceil(64) * 64;
        header.push_str(&" ".repeat(total - pre - header.len() - 1));
        header.push('\n');
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    } else {
        header.push_str(&" ".repeat(total - pre - header.len() - 1));
        header.push('\n');
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&encode_le(tensor.data()));
    Ok(out)
}

fn io_err(path: &Path, source: std::io::Error) -> TensorError {
    TensorError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads one `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, TensorError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    parse_npy(&bytes, &path.display().to_string())
}

/// Reads every array of an `.npz` file, in archive order, keyed by member name without `.npy`.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, TensorError> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let shown = path.display().to_string();
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format_err(&shown, format!("not a valid .npz archive: {e}")))?;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut member = archive
            .by_index(i)
            .map_err(|e| format_err(&shown, format!("member {i}: {e}")))?;
        let name = member.name().to_string();
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| format_err(&shown, format!("member {name}: {e}")))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let tensor = parse_npy(&bytes, &format!("{shown}:{name}"))?;
        out.push((key, tensor));
    }
    Ok(out)
}

/// Writes arrays into an `.npz` file (stored, uncompressed). The file is written to a temporary
/// name beside the target and renamed, so a failure never leaves a half-written file.
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> Result<(), TensorError> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buffer);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for (name, tensor) in arrays {
            let bytes = to_npy_bytes(tensor).map_err(|e| match e {
                TensorError::Unsupported { dtype, .. } => format_err(
                    &path.display().to_string(),
                    format!("array '{name}' has type {dtype}, which .npz cannot hold"),
                ),
                other => other,
            })?;
            zip.start_file(format!("{name}.npy"), options)
                .map_err(|e| format_err(&path.display().to_string(), e.to_string()))?;
            zip.write_all(&bytes).map_err(|e| io_err(path, e))?;
        }
        zip.finish()
            .map_err(|e| format_err(&path.display().to_string(), e.to_string()))?;
    }
    write_atomic(path, buffer.get_ref())
}

/// Writes a file by writing a temporary sibling and renaming it over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TensorError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| format_err(&path.display().to_string(), "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// Reads arrays from an `.npz` or a single `.npy` (keyed by the file stem).
pub fn read_arrays(path: &Path) -> Result<Vec<(String, Tensor)>, TensorError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(vec![(stem, read_npy(path)?)])
        }
        _ => read_npz(path),
    }
}

/// Convenience: a typed element read back from an array (used by tests).
pub fn values<T: Element>(tensor: &Tensor) -> Result<Vec<T>, TensorError> {
    Ok(tensor.as_slice::<T>()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_all_types() {
        let tensors = vec![
            Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 3.25, 0.0]).unwrap(),
            Tensor::from_vec(vec![3], vec![1i64, -2, i64::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
            Tensor::scalar(7u8),
            Tensor::from_vec(vec![1, 0, 3], Vec::<f64>::new()).unwrap(),
            Tensor::from_vec(vec![2], vec![f16::from_f32(1.5), f16::from_f32(-0.25)]).unwrap(),
        ];
        for t in tensors {
            let bytes = to_npy_bytes(&t).unwrap();
            assert_eq!(
                (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
                0
            );
            assert_eq!(parse_npy(&bytes, "t").unwrap(), t);
        }
    }

    #[test]
    fn npy_rejects_garbage() {
        assert!(parse_npy(b"hello world", "x").is_err());
        let t = Tensor::from_vec(vec![4], vec![1f32; 4]).unwrap();
        let bytes = to_npy_bytes(&t).unwrap();
        let err = parse_npy(&bytes[..bytes.len() - 3], "cut.npy").unwrap_err();
        assert!(err.to_string().contains("cut.npy"), "{err}");
    }

    #[test]
    fn npz_round_trip() {
        let dir = std::env::temp_dir().join(format!("kvant-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.npz");
        let arrays = vec![
            (
                "x".to_string(),
                Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap(),
            ),
            (
                "ids".to_string(),
                Tensor::from_vec(vec![1, 2], vec![3i64, 4]).unwrap(),
            ),
        ];
        write_npz(&path, &arrays).unwrap();
        assert_eq!(read_npz(&path).unwrap(), arrays);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
