// A quorum made by some conversion or default: there is none.
use tollgate_gateway::engine::Quorum;

fn main() {
    let _forged: Quorum = Default::default();
}
