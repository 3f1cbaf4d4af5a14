// A quorum written out by hand: its fields are private.
use tollgate_gateway::engine::Quorum;

fn main() {
    let _forged = Quorum {
        approval: String::new(),
    };
}
