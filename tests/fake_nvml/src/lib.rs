//! A stand-in `libnvidia-ml.so.1` for tests on machines without an NVIDIA
//! driver. It exports the NVML functions that nvml-wrapper calls for
//! cinecut (init/shutdown, device count and handle by index, UUID, name,
//! memory info and its `_v2` variant, running compute processes, driver
//! version) and describes the GPUs listed in the file named by
//! `FAKE_NVML_STATE`, re-read on every call so a test can free or take
//! memory while cinecut runs.
//!
//! The state file has one GPU per line, fields separated by `|`:
//!
//! ```text
//! GPU-0b1c…|NVIDIA Fake H200|143771|140000|4242:3000,4243:
//! ```
//!
//! UUID, name, total MiB, free MiB, and the compute processes as
//! `pid:MiB` (MiB empty when unknown). Blank lines and lines starting with
//! `#` are ignored. No `FAKE_NVML_STATE`, or a file that cannot be read,
//! is a machine whose driver is not loaded (`NVML_ERROR_DRIVER_NOT_LOADED`).

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::{c_char, c_uint, c_ulonglong};

type Return = c_uint;
const SUCCESS: Return = 0;
const UNINITIALIZED: Return = 1;
const INVALID_ARGUMENT: Return = 2;
const NOT_FOUND: Return = 6;
const INSUFFICIENT_SIZE: Return = 7;
const DRIVER_NOT_LOADED: Return = 9;

const MIB: u64 = 1024 * 1024;

struct Gpu {
    uuid: String,
    name: String,
    total_mib: u64,
    free_mib: u64,
    processes: Vec<(u32, Option<u64>)>,
}

fn parse_line(line: &str) -> Option<Gpu> {
    let mut f = line.split('|').map(str::trim);
    let uuid = f.next()?.to_string();
    let name = f.next()?.to_string();
    let total_mib = f.next()?.parse().ok()?;
    let free_mib = f.next()?.parse().ok()?;
    let processes = f
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .filter_map(|p| {
            let (pid, mib) = p.trim().split_once(':').unwrap_or((p.trim(), ""));
            Some((pid.parse().ok()?, mib.parse().ok()))
        })
        .collect();
    Some(Gpu {
        uuid,
        name,
        total_mib,
        free_mib,
        processes,
    })
}

fn gpus() -> Option<Vec<Gpu>> {
    let path = std::env::var_os("FAKE_NVML_STATE")?;
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .filter_map(parse_line)
            .collect(),
    )
}

/// A device handle is its index plus one, so that no handle is null.
fn with_gpu(device: usize, f: impl FnOnce(&Gpu) -> Return) -> Return {
    let Some(list) = gpus() else {
        return UNINITIALIZED;
    };
    match device.checked_sub(1).and_then(|i| list.get(i)) {
        Some(gpu) => f(gpu),
        None => INVALID_ARGUMENT,
    }
}

unsafe fn write_str(s: &str, out: *mut c_char, len: c_uint) -> Return {
    if out.is_null() {
        return INVALID_ARGUMENT;
    }
    let bytes = s.as_bytes();
    if bytes.len() + 1 > len as usize {
        return INSUFFICIENT_SIZE;
    }
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), out, bytes.len());
        *out.add(bytes.len()) = 0;
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> Return {
    if gpus().is_some() {
        SUCCESS
    } else {
        DRIVER_NOT_LOADED
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> Return {
    nvmlInit_v2()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> Return {
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(out: *mut c_char, len: c_uint) -> Return {
    unsafe { write_str("999.0.fake", out, len) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> Return {
    let Some(list) = gpus() else {
        return UNINITIALIZED;
    };
    if count.is_null() {
        return INVALID_ARGUMENT;
    }
    unsafe { *count = list.len() as c_uint };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut usize,
) -> Return {
    let Some(list) = gpus() else {
        return UNINITIALIZED;
    };
    if device.is_null() || index as usize >= list.len() {
        return INVALID_ARGUMENT;
    }
    unsafe { *device = index as usize + 1 };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut usize,
) -> Return {
    let Some(list) = gpus() else {
        return UNINITIALIZED;
    };
    if uuid.is_null() || device.is_null() {
        return INVALID_ARGUMENT;
    }
    let wanted = unsafe { std::ffi::CStr::from_ptr(uuid) }.to_string_lossy();
    match list.iter().position(|g| g.uuid == wanted) {
        Some(i) => {
            unsafe { *device = i + 1 };
            SUCCESS
        }
        None => NOT_FOUND,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: usize, out: *mut c_char, len: c_uint) -> Return {
    with_gpu(device, |g| unsafe { write_str(&g.uuid, out, len) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(device: usize, out: *mut c_char, len: c_uint) -> Return {
    with_gpu(device, |g| unsafe { write_str(&g.name, out, len) })
}

/// `nvmlMemory_t`.
#[repr(C)]
pub struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
pub struct MemoryV2 {
    version: c_uint,
    total: c_ulonglong,
    reserved: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// (total, free, used) in bytes.
fn memory(g: &Gpu) -> (c_ulonglong, c_ulonglong, c_ulonglong) {
    let total = g.total_mib * MIB;
    let free = g.free_mib.min(g.total_mib) * MIB;
    (total, free, total - free)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: usize, out: *mut Memory) -> Return {
    with_gpu(device, |g| {
        if out.is_null() {
            return INVALID_ARGUMENT;
        }
        let (total, free, used) = memory(g);
        unsafe { *out = Memory { total, free, used } };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(device: usize, out: *mut MemoryV2) -> Return {
    with_gpu(device, |g| {
        if out.is_null() {
            return INVALID_ARGUMENT;
        }
        let (total, free, used) = memory(g);
        unsafe {
            (*out).total = total;
            (*out).reserved = 0;
            (*out).free = free;
            (*out).used = used;
        }
        SUCCESS
    })
}

/// `nvmlProcessInfo_t` (v2 layout, which the `_v2` and `_v3` calls fill).
#[repr(C)]
pub struct ProcessInfo {
    pid: c_uint,
    used_gpu_memory: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

/// NVML's "not available" for a process's memory.
const NOT_AVAILABLE: c_ulonglong = c_ulonglong::MAX;

unsafe fn compute_processes(device: usize, count: *mut c_uint, out: *mut ProcessInfo) -> Return {
    with_gpu(device, |g| {
        if count.is_null() {
            return INVALID_ARGUMENT;
        }
        let room = unsafe { *count } as usize;
        unsafe { *count = g.processes.len() as c_uint };
        if g.processes.is_empty() {
            return SUCCESS;
        }
        if out.is_null() || room < g.processes.len() {
            return INSUFFICIENT_SIZE;
        }
        for (i, (pid, mib)) in g.processes.iter().enumerate() {
            unsafe {
                *out.add(i) = ProcessInfo {
                    pid: *pid,
                    used_gpu_memory: mib.map_or(NOT_AVAILABLE, |m| m * MIB),
                    gpu_instance_id: u32::MAX,
                    compute_instance_id: u32::MAX,
                }
            };
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: usize,
    count: *mut c_uint,
    out: *mut ProcessInfo,
) -> Return {
    unsafe { compute_processes(device, count, out) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v2(
    device: usize,
    count: *mut c_uint,
    out: *mut ProcessInfo,
) -> Return {
    unsafe { compute_processes(device, count, out) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlErrorString(result: Return) -> *const c_char {
    let s: &'static [u8] = match result {
        SUCCESS => b"Success\0",
        UNINITIALIZED => b"Uninitialized\0",
        INVALID_ARGUMENT => b"Invalid Argument\0",
        NOT_FOUND => b"Not Found\0",
        INSUFFICIENT_SIZE => b"Insufficient Size\0",
        DRIVER_NOT_LOADED => b"Driver Not Loaded\0",
        _ => b"Unknown Error\0",
    };
    s.as_ptr().cast()
}
