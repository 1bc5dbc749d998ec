//! The attack corpus, alone in a test process of its own: it asserts how much the process's
//! resident memory grows, which other tests running beside it in one process would inflate.

#[path = "../it/attacks.rs"]
mod attacks;
#[path = "../it/support.rs"]
mod support;
