//! Empty library target so cargo tracks this crate as a build dependency of `ri-user`.
#![no_std]
