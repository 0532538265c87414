//! A guest that panics before it ever listens: a broken release that a live
//! swap must refuse.

fn main() {
    panic!("broken at start-up");
}
