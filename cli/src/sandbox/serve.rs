//! `tollgate sandbox serve` (next).
