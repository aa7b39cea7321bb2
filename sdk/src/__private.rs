//! What the generated code calls. Not a stable API: use the attributes.
//!
//! Pointers in the batch descriptor are 32-bit offsets into linear memory
//! (see `ABI.md`); on wasm32 they are plain pointers. Natively this code
//! compiles but is never called.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Timestamp;

/// The ABI version this SDK speaks.
pub const ABI_VERSION: u32 = 1;
/// Written into the schema section.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Status codes `wafer_transform` returns.
pub const OK: i32 = 0;
pub const BAD_DESCRIPTOR: i32 = 1;

/// One column of the batch descriptor, as the host laid it out.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawColumn {
    pub validity: u32,
    pub values: u32,
    pub offsets: u32,
    pub values_len: u32,
}

#[repr(C)]
struct RawHeader {
    abi_version: u32,
    rows: u32,
    inputs: u32,
    outputs: u32,
}

/// The row being computed, reported with a panic.
static CURRENT_ROW: AtomicU32 = AtomicU32::new(u32::MAX);

pub fn set_row(row: usize) {
    CURRENT_ROW.store(row as u32, Ordering::Relaxed);
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wafer")]
extern "C" {
    #[link_name = "error"]
    fn host_error(ptr: *const u8, len: usize, row: u32);
}

/// Hands a message to the host (the ABI's only import).
pub fn report_error(message: &str, row: u32) {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        host_error(message.as_ptr(), message.len(), row)
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (message, row);
}

/// Panics become messages for the host instead of a bare trap.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        report_error(&message, CURRENT_ROW.load(Ordering::Relaxed));
    }));
}

/// `wafer_alloc`: memory for the host, zero on failure.
pub fn alloc(size: u32, align: u32) -> u32 {
    match std::alloc::Layout::from_size_align(size as usize, align as usize) {
        Ok(layout) if layout.size() > 0 => unsafe { std::alloc::alloc(layout) as usize as u32 },
        _ => 0,
    }
}

/// The batch the host passed to `wafer_transform`.
pub struct Batch {
    rows: usize,
    columns: *mut RawColumn,
    inputs: usize,
    outputs: usize,
}

impl Batch {
    /// Checks the descriptor's header against what the transform expects.
    ///
    /// # Safety
    /// `descriptor` must be what the host passed to `wafer_transform`.
    pub unsafe fn open(descriptor: u32, inputs: usize, outputs: usize) -> Result<Batch, i32> {
        let header = &*(descriptor as usize as *const RawHeader);
        if header.abi_version != ABI_VERSION
            || header.inputs as usize != inputs
            || header.outputs as usize != outputs
        {
            report_error(
                &format!(
                    "batch descriptor says ABI {} with {} inputs and {} outputs; this module \
                     speaks ABI {ABI_VERSION} with {inputs} inputs and {outputs} outputs",
                    header.abi_version, header.inputs, header.outputs
                ),
                u32::MAX,
            );
            return Err(BAD_DESCRIPTOR);
        }
        Ok(Batch {
            rows: header.rows as usize,
            columns: (descriptor as usize + std::mem::size_of::<RawHeader>()) as *mut RawColumn,
            inputs,
            outputs,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn input<'a>(&self, index: usize) -> InputColumn<'a> {
        debug_assert!(index < self.inputs);
        let raw = unsafe { *self.columns.add(index) };
        InputColumn {
            raw,
            _memory: PhantomData,
        }
    }

    /// Output column `index`. Built in a fixed-size array by the generated
    /// code, so a transform with fixed-width outputs never touches the heap.
    pub fn output(&self, index: usize, element_width: usize) -> OutputColumn {
        debug_assert!(index < self.outputs);
        unsafe {
            let raw = self.columns.add(self.inputs + index);
            let validity = (*raw).validity as usize as *mut u8;
            // Every row starts valid; a null clears its bit. That saves a
            // read-modify-write per row on the common path.
            std::ptr::write_bytes(validity, 0xFF, self.rows.div_ceil(8));
            OutputColumn {
                raw,
                validity,
                values: (*raw).values as usize as *mut u8,
                offsets: (*raw).offsets as usize as *mut i32,
                element_width,
                data: Vec::new(),
            }
        }
    }

    /// Publishes the variable-width outputs' data. The module's memory is
    /// discarded after the call, so the buffers are deliberately leaked.
    pub fn finish(self, outputs: &mut [OutputColumn]) {
        for column in outputs {
            if column.element_width == 0 {
                continue;
            }
            let len = column.data.len() / column.element_width;
            let data = std::mem::take(&mut column.data).leak();
            unsafe {
                (*column.raw).values = data.as_ptr() as usize as u32;
                (*column.raw).values_len = len as u32;
            }
        }
    }
}

/// An input column in Arrow layout.
pub struct InputColumn<'a> {
    raw: RawColumn,
    _memory: PhantomData<&'a [u8]>,
}

fn bit(bitmap: u32, index: usize) -> bool {
    let byte = unsafe { *((bitmap as usize + index / 8) as *const u8) };
    byte & (1 << (index % 8)) != 0
}

impl<'a> InputColumn<'a> {
    pub fn is_valid(&self, row: usize) -> bool {
        self.raw.validity == 0 || bit(self.raw.validity, row)
    }

    fn fixed<T: Copy>(&self, row: usize) -> T {
        unsafe { std::ptr::read_unaligned((self.raw.values as usize as *const T).add(row)) }
    }

    fn range(&self, row: usize) -> (usize, usize) {
        let offsets = self.raw.offsets as usize as *const i32;
        unsafe {
            (
                std::ptr::read_unaligned(offsets.add(row)) as usize,
                std::ptr::read_unaligned(offsets.add(row + 1)) as usize,
            )
        }
    }

    fn items<T>(&self, row: usize) -> &'a [T] {
        let (start, end) = self.range(row);
        if end <= start {
            return &[];
        }
        // The host aligns every buffer to 8 bytes and list offsets count
        // elements, so element pointers are aligned.
        unsafe {
            std::slice::from_raw_parts(
                (self.raw.values as usize as *const T).add(start),
                end - start,
            )
        }
    }
}

/// The scalar types, sealed in this crate.
pub trait Scalar<'a>: Sized {
    const TYPE: &'static str;
    fn read(column: &InputColumn<'a>, row: usize) -> Self;
}

macro_rules! fixed_scalar {
    ($($t:ty => $name:literal),*) => {$(
        impl<'a> Scalar<'a> for $t {
            const TYPE: &'static str = $name;
            fn read(column: &InputColumn<'a>, row: usize) -> Self {
                column.fixed::<$t>(row)
            }
        }
    )*};
}
fixed_scalar!(i32 => "int32", i64 => "int64", f32 => "float32", f64 => "float64");

impl<'a> Scalar<'a> for bool {
    const TYPE: &'static str = "bool";
    fn read(column: &InputColumn<'a>, row: usize) -> Self {
        bit(column.raw.values, row)
    }
}

impl<'a> Scalar<'a> for Timestamp {
    const TYPE: &'static str = "timestamp";
    fn read(column: &InputColumn<'a>, row: usize) -> Self {
        Timestamp {
            micros: column.fixed::<i64>(row),
        }
    }
}

impl<'a> Scalar<'a> for &'a [u8] {
    const TYPE: &'static str = "bytes";
    fn read(column: &InputColumn<'a>, row: usize) -> Self {
        column.items::<u8>(row)
    }
}

impl<'a> Scalar<'a> for Vec<u8> {
    const TYPE: &'static str = "bytes";
    fn read(column: &InputColumn<'a>, row: usize) -> Self {
        column.items::<u8>(row).to_vec()
    }
}

impl<'a> Scalar<'a> for &'a str {
    const TYPE: &'static str = "string";
    fn read(column: &InputColumn<'a>, row: usize) -> Self {
        // The host checks UTF-8 before the call (Arrow strings are UTF-8).
        unsafe { std::str::from_utf8_unchecked(column.items::<u8>(row)) }
    }
}

impl<'a> Scalar<'a> for String {
    const TYPE: &'static str = "string";
    fn read(column: &InputColumn<'a>, row: usize) -> Self {
        <&str as Scalar>::read(column, row).to_owned()
    }
}

macro_rules! list_scalar {
    ($($t:ty => $name:literal),*) => {$(
        impl<'a> Scalar<'a> for &'a [$t] {
            const TYPE: &'static str = $name;
            fn read(column: &InputColumn<'a>, row: usize) -> Self {
                column.items::<$t>(row)
            }
        }
        impl<'a> Scalar<'a> for Vec<$t> {
            const TYPE: &'static str = $name;
            fn read(column: &InputColumn<'a>, row: usize) -> Self {
                column.items::<$t>(row).to_vec()
            }
        }
    )*};
}
list_scalar!(f32 => "list<float32>", f64 => "list<float64>", i32 => "list<int32>", i64 => "list<int64>");

/// An output column: fixed-width values go straight into the buffers the
/// host placed; variable-width data collects here until [`Batch::finish`].
pub struct OutputColumn {
    raw: *mut RawColumn,
    // Copied out of the descriptor once: reading them through `raw` on
    // every row would force reloads after each store (they may alias).
    validity: *mut u8,
    values: *mut u8,
    offsets: *mut i32,
    /// 0 for fixed width, else the size of one data item.
    element_width: usize,
    data: Vec<u8>,
}

impl OutputColumn {
    fn put_fixed<T: Copy>(&mut self, row: usize, value: T) {
        unsafe {
            std::ptr::write_unaligned((self.values as *mut T).add(row), value);
        }
    }

    fn end_row(&mut self, row: usize) {
        let end = (self.data.len() / self.element_width.max(1)) as i32;
        unsafe {
            std::ptr::write_unaligned(self.offsets.add(row + 1), end);
        }
    }

    fn put_items<T: Copy>(&mut self, row: usize, items: &[T]) {
        let bytes = unsafe {
            std::slice::from_raw_parts(items.as_ptr() as *const u8, std::mem::size_of_val(items))
        };
        self.data.extend_from_slice(bytes);
        self.end_row(row);
    }

    /// A null: the validity bit is cleared; variable-width rows stay empty.
    pub fn put_null(&mut self, row: usize) {
        unsafe {
            *self.validity.add(row / 8) &= !(1 << (row % 8));
        }
        if self.element_width != 0 {
            self.end_row(row);
        }
    }
}

/// Marks every output of `row` null.
pub fn null_row(outputs: &mut [OutputColumn], row: usize) {
    for column in outputs {
        column.put_null(row);
    }
}

/// Output scalars, sealed in this crate.
pub trait ScalarOut {
    const TYPE: &'static str;
    /// Bytes per data item for variable-width types, 0 for fixed width.
    const ELEMENT_WIDTH: usize;
    fn put(self, column: &mut OutputColumn, row: usize);
}

macro_rules! fixed_out {
    ($($t:ty => $name:literal),*) => {$(
        impl ScalarOut for $t {
            const TYPE: &'static str = $name;
            const ELEMENT_WIDTH: usize = 0;
            fn put(self, column: &mut OutputColumn, row: usize) {
                column.put_fixed(row, self);
            }
        }
    )*};
}
fixed_out!(i32 => "int32", i64 => "int64");

// NaN outputs are canonical (the bits of `f64::NAN`), whatever produced
// them, so the module agrees with native code and across machines.
impl ScalarOut for f64 {
    const TYPE: &'static str = "float64";
    const ELEMENT_WIDTH: usize = 0;
    fn put(self, column: &mut OutputColumn, row: usize) {
        column.put_fixed(row, canonical_f64(self));
    }
}

impl ScalarOut for f32 {
    const TYPE: &'static str = "float32";
    const ELEMENT_WIDTH: usize = 0;
    fn put(self, column: &mut OutputColumn, row: usize) {
        column.put_fixed(row, canonical_f32(self));
    }
}

/// `f64::NAN` for every NaN, the value itself otherwise.
pub fn canonical_f64(value: f64) -> f64 {
    if value.is_nan() {
        f64::NAN
    } else {
        value
    }
}

/// `f32::NAN` for every NaN, the value itself otherwise.
pub fn canonical_f32(value: f32) -> f32 {
    if value.is_nan() {
        f32::NAN
    } else {
        value
    }
}

impl ScalarOut for bool {
    const TYPE: &'static str = "bool";
    const ELEMENT_WIDTH: usize = 0;
    fn put(self, column: &mut OutputColumn, row: usize) {
        if self {
            unsafe {
                *column.values.add(row / 8) |= 1 << (row % 8);
            }
        }
    }
}

impl ScalarOut for Timestamp {
    const TYPE: &'static str = "timestamp";
    const ELEMENT_WIDTH: usize = 0;
    fn put(self, column: &mut OutputColumn, row: usize) {
        column.put_fixed(row, self.micros);
    }
}

impl ScalarOut for String {
    const TYPE: &'static str = "string";
    const ELEMENT_WIDTH: usize = 1;
    fn put(self, column: &mut OutputColumn, row: usize) {
        column.put_items(row, self.as_bytes());
    }
}

impl ScalarOut for Vec<u8> {
    const TYPE: &'static str = "bytes";
    const ELEMENT_WIDTH: usize = 1;
    fn put(self, column: &mut OutputColumn, row: usize) {
        column.put_items(row, &self);
    }
}

impl ScalarOut for Vec<f32> {
    const TYPE: &'static str = "list<float32>";
    const ELEMENT_WIDTH: usize = 4;
    fn put(self, column: &mut OutputColumn, row: usize) {
        let canonical: Vec<f32> = self.into_iter().map(canonical_f32).collect();
        column.put_items(row, &canonical);
    }
}

impl ScalarOut for Vec<f64> {
    const TYPE: &'static str = "list<float64>";
    const ELEMENT_WIDTH: usize = 8;
    fn put(self, column: &mut OutputColumn, row: usize) {
        let canonical: Vec<f64> = self.into_iter().map(canonical_f64).collect();
        column.put_items(row, &canonical);
    }
}

impl ScalarOut for Vec<i32> {
    const TYPE: &'static str = "list<int32>";
    const ELEMENT_WIDTH: usize = 4;
    fn put(self, column: &mut OutputColumn, row: usize) {
        column.put_items(row, &self);
    }
}

impl ScalarOut for Vec<i64> {
    const TYPE: &'static str = "list<int64>";
    const ELEMENT_WIDTH: usize = 8;
    fn put(self, column: &mut OutputColumn, row: usize) {
        column.put_items(row, &self);
    }
}

// The schema section is assembled at compile time from the parameter and
// output types' names, so it cannot disagree with the code.

pub const fn total_len(parts: &[&[u8]]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < parts.len() {
        total += parts[i].len();
        i += 1;
    }
    total
}

pub const fn concat<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut k = 0;
    let mut i = 0;
    while i < parts.len() {
        let part = parts[i];
        let mut j = 0;
        while j < part.len() {
            out[k] = part[j];
            k += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

pub const fn json_bool(value: bool) -> &'static [u8] {
    if value {
        b"true"
    } else {
        b"false"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nan_output_is_the_canonical_one_and_nothing_else_changes() {
        for bits in [
            0x7ff0_0000_dead_beef_u64,
            0xfff8_0000_0000_0000,
            0x7ff8_0000_0000_0001,
            0xffff_ffff_ffff_ffff,
        ] {
            let value = f64::from_bits(bits);
            assert_eq!(
                canonical_f64(value).to_bits(),
                0x7ff8_0000_0000_0000,
                "{bits:x}"
            );
            let narrow = f32::from_bits((bits >> 32) as u32 | 0x7f80_0000);
            assert_eq!(canonical_f32(narrow).to_bits(), 0x7fc0_0000, "{bits:x}");
        }
        for value in [-0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 5e-324, -1.5] {
            assert_eq!(canonical_f64(value).to_bits(), value.to_bits());
            let narrow = value as f32;
            assert_eq!(canonical_f32(narrow).to_bits(), narrow.to_bits());
        }
    }
}
