//! Programmes and what households are owed: transfer-value rules per modality ([`rules`]) and
//! cash-for-work attendance sheets ([`attendance`]).

pub mod attendance;
pub mod rules;
