// A real quorum, with a reviewer's grant added afterwards: its refs are
// private, and so is everything else it holds.
use tollgate_gateway::engine::Quorum;

fn widen(q: &mut Quorum) {
    q.refs.push("rcpt_00000000000000000000000000000000".to_owned());
}

fn main() {}
