//! The ping matrix: every pair of containers pings (in parallel), and the result must equal
//! what the EPG policy says. Reachable pairs get several one-second tries (ARP and MAC
//! learning after a change), unreachable ones two, so a matrix takes a few seconds.

use apic_sim::testbed::Pinger;

use crate::{docker, LabError};

/// A container in the matrix.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Docker container name.
    pub container: String,
    /// Its address (no prefix length).
    pub ip: String,
    /// The EPG it is in.
    pub epg: String,
    /// The Weft host it runs on.
    pub host: String,
}

/// Tries for a pair that should answer.
const REACH_TRIES: u32 = 8;
/// Tries for a pair that must stay silent.
const SILENT_TRIES: u32 = 2;

/// Pings every unordered pair (an answer proves both directions) and compares with
/// `expect(a, b)`. On a mismatch the error is the whole matrix, printed for a person.
pub fn check(
    endpoints: &[Endpoint],
    expect: impl Fn(&Endpoint, &Endpoint) -> bool + Sync,
) -> Result<(), String> {
    let pingers: Vec<Pinger> = endpoints
        .iter()
        .map(|e| docker::pid(&e.container).map(Pinger::process))
        .collect::<Result<_, LabError>>()
        .map_err(|e| e.to_string())?;
    let n = endpoints.len();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect();
    let got: Vec<((usize, usize), bool, bool)> = std::thread::scope(|s| {
        let runs: Vec<_> = pairs
            .iter()
            .map(|&(a, b)| {
                let (pinger, to) = (&pingers[a], &endpoints[b].ip);
                let want = expect(&endpoints[a], &endpoints[b]);
                s.spawn(move || {
                    let tries = if want { REACH_TRIES } else { SILENT_TRIES };
                    ((a, b), want, pinger.reaches(to, tries))
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap_or(((0, 0), true, false)))
            .collect()
    });
    if got.iter().all(|(_, want, got)| want == got) {
        return Ok(());
    }
    let mut cell = vec![vec![' '; n]; n];
    for ((a, b), want, reached) in got {
        let c = match (want, reached) {
            (true, true) => 'o',
            (false, false) => '.',
            (true, false) => 'X',
            (false, true) => '!',
        };
        cell[a][b] = c;
        cell[b][a] = c;
    }
    let mut out = String::from(
        "ping matrix differs from the EPG policy (o reachable, . isolated, as expected; \
         X should reach but does not, ! should be isolated but reaches):\n     ",
    );
    for b in 0..n {
        out.push_str(&format!("{b:>3}"));
    }
    out.push('\n');
    for (a, row) in cell.iter().enumerate() {
        let e = &endpoints[a];
        out.push_str(&format!("{a:>3}  "));
        for c in row {
            out.push_str(&format!("  {c}"));
        }
        out.push_str(&format!(
            "   {} {} epg={} host={}\n",
            e.container, e.ip, e.epg, e.host
        ));
    }
    Err(out)
}

/// The EPG policy: reachable exactly within an EPG.
pub fn same_epg(a: &Endpoint, b: &Endpoint) -> bool {
    a.epg == b.epg
}
