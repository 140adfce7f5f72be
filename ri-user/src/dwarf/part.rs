//! What one load adds to a [`super::DebugInfo`] (a [`Part`]: types, names,
//! functions, variables of some units), and maps keyed by DIE offset.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use super::{FunctionInfo, Signature, Type, TypeId};

/// A multiplicative hash for DIE offsets (SipHash is a tenth of the load
/// time otherwise).
#[derive(Default)]
pub(super) struct OffsetHasher(u64);

impl Hasher for OffsetHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type OffsetMap<V> = HashMap<usize, V, BuildHasherDefault<OffsetHasher>>;

/// What one load adds to a [`DebugInfo`]: the types of some units (ids
/// from `base` on), their names, functions and variables.
pub(super) struct Part {
    pub base: TypeId,
    pub types: Vec<Type>,
    pub incomplete: Vec<TypeId>,
    pub signatures: HashMap<TypeId, Signature>,
    /// Type names in arena order, with whether that type is complete.
    pub names: Vec<(String, TypeId, bool)>,
    /// Functions: unit, whether a definition, signature.
    pub functions: Vec<(usize, bool, FunctionInfo)>,
    /// Variables: name, unit, rank, address, type.
    pub variables: Vec<(String, usize, u8, u64, TypeId)>,
    pub by_offset: OffsetMap<TypeId>,
}
