//! A server whose every request costs CPU: for each read it runs a fixed
//! number of rounds of a hash chain (`WORK_ROUNDS` in its environment,
//! about half a millisecond at the default on the benchmark's machine)
//! and answers `computed <hash>`. For measuring how a tenant's throughput
//! scales with its instances when the guest, not the host or the load
//! generator, is the bottleneck.
#![cfg_attr(target_family = "wasm", no_main)]

use std::net::SocketAddr;

/// Rounds per request unless `WORK_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: u64 = 320_000;

struct Compute {
    rounds: u64,
}

impl guest::Protocol for Compute {
    type Session = ();

    fn connect(&mut self, _peer: SocketAddr) {}

    fn receive(&mut self, _session: &mut (), data: &[u8], reply: &mut Vec<u8>) {
        // Seeded by the request, so no round can be computed ahead.
        let mut hash = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        for _ in 0..self.rounds {
            hash = hash
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            hash ^= hash >> 33;
        }
        reply.extend_from_slice(format!("computed {hash:016x}\n").as_bytes());
    }
}

guest::serve!(
    Compute,
    Compute {
        rounds: std::env::var("WORK_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(DEFAULT_ROUNDS),
    }
);
