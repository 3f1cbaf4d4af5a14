//! The type boundary of approvals: only the engine's approvals module can
//! make a [`tollgate_gateway::engine::Quorum`] (a completed quorum), and
//! only a `Quorum` can be executed. Code elsewhere that tries to make,
//! fill in or alter one does not compile.

#[test]
fn code_outside_the_approvals_module_cannot_make_a_quorum() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
