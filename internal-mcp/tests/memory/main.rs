//! The attack corpus, in a test process of its own: it asserts the process's peak resident memory,
//! which other tests running beside it in one process would inflate.

#[path = "../it/attacks.rs"]
mod attacks;
#[path = "../it/support.rs"]
mod support;
