//! Emitting a plan's instructions: the value-stack depth and the limits
//! checked as each goes in.

use ri_common::{Insn, MAX_INSNS, STACK_DEPTH, op};

use super::{Compiler, PlanError};
use crate::probe::{ParseError, Span};

impl Compiler<'_> {
    pub(super) fn err(&self, span: Span, msg: String) -> PlanError {
        PlanError(ParseError::new(&self.spec.text, span, msg))
    }

    /// Appends one instruction, tracking the value-stack depth.
    pub(super) fn insn(&mut self, insn: Insn, span: Span) -> Result<(), PlanError> {
        if self.insns.len() >= MAX_INSNS {
            return Err(self.err(
                span,
                format!("probe too complex: more than {MAX_INSNS} plan instructions"),
            ));
        }
        let delta: isize = match insn.op {
            op::COMM | op::SWAP | op::NEG | op::NOT | op::BNOT | op::LOAD | op::EXT | op::END => 0,
            op::REG
            | op::IMM
            | op::PID
            | op::TID
            | op::UID
            | op::NSECS
            | op::CPU
            | op::STACK
            | op::TAKE => 1,
            _ => -1,
        };
        self.depth = (self.depth as isize + delta) as usize;
        if self.depth > STACK_DEPTH {
            return Err(self.err(
                span,
                format!("expression nests too deeply (value stack of {STACK_DEPTH})"),
            ));
        }
        self.insns.push(insn);
        Ok(())
    }

    pub(super) fn emit(&mut self, code: u8, span: Span) -> Result<(), PlanError> {
        self.insn(
            Insn {
                op: code,
                ..Default::default()
            },
            span,
        )
    }

    pub(super) fn with(
        &mut self,
        code: u8,
        width: u8,
        signed: bool,
        len: u32,
        span: Span,
    ) -> Result<(), PlanError> {
        self.insn(
            Insn {
                op: code,
                width,
                signed: signed as u8,
                len,
                ..Default::default()
            },
            span,
        )
    }

    pub(super) fn reg(&mut self, idx: u32, span: Span) -> Result<(), PlanError> {
        self.with(op::REG, 0, false, idx, span)
    }

    pub(super) fn imm(&mut self, v: u64, span: Span) -> Result<(), PlanError> {
        self.insn(
            Insn {
                op: op::IMM,
                imm: v,
                ..Default::default()
            },
            span,
        )
    }

    /// Adds a constant to the top value, merging with a preceding constant
    /// addition.
    pub(super) fn add_const(&mut self, k: u64, span: Span) -> Result<(), PlanError> {
        if k == 0 {
            return Ok(());
        }
        if let [.., a, b] = self.insns.as_mut_slice()
            && a.op == op::IMM
            && b.op == op::ADD
        {
            a.imm = a.imm.wrapping_add(k);
            return Ok(());
        }
        self.imm(k, span)?;
        self.emit(op::ADD, span)
    }

    /// Reads `width` bytes at the address on the stack. A preceding
    /// `IMM k; ADD` folds into the load's offset.
    pub(super) fn load(&mut self, width: u8, signed: bool, span: Span) -> Result<(), PlanError> {
        let mut offset = 0u64;
        if let [.., a, b] = self.insns.as_slice()
            && a.op == op::IMM
            && b.op == op::ADD
        {
            offset = a.imm;
            // The pair pushed and popped one value: the depth is unchanged.
            self.insns.truncate(self.insns.len() - 2);
        }
        self.insn(
            Insn {
                op: op::LOAD,
                width,
                signed: signed as u8,
                imm: offset,
                ..Default::default()
            },
            span,
        )
    }

    /// Loads the bytes holding a bitfield and extracts it.
    pub(super) fn bitfield(
        &mut self,
        off: u32,
        size: u32,
        signed: bool,
        span: Span,
    ) -> Result<(), PlanError> {
        let need = off + size;
        let width = match need {
            0..=8 => 1,
            9..=16 => 2,
            17..=32 => 4,
            _ => 8,
        };
        self.load(width, false, span)?;
        // Move the field to the top bits, then shift it down with or without
        // sign extension.
        self.imm((64 - need) as u64, span)?;
        self.emit(op::SHL, span)?;
        self.imm((64 - size) as u64, span)?;
        self.emit(if signed { op::SAR } else { op::SHR }, span)
    }
}
