//! `create`, `stats` (once or `--watch`) and `verify`.

use crate::util::{self, dur, open_read, open_write, print_json, size, Fail, Geometry};
use serde::Serialize;
use slotcache::{Cache, Options};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

#[derive(Serialize)]
struct GeometryJson {
    path: String,
    file_size: u64,
    stripes: u32,
    segments: u32,
    segment_size: u64,
    index_slots: u64,
    reader_slots: u32,
    max_value_len: u64,
    created_unix_ms: u64,
    read_only: bool,
}

fn geometry(cache: &Cache) -> GeometryJson {
    let i = cache.info();
    GeometryJson {
        path: cache.path().display().to_string(),
        file_size: i.file_size,
        stripes: i.stripes,
        segments: i.segments,
        segment_size: i.segment_size,
        index_slots: i.index_slots,
        reader_slots: i.reader_slots,
        max_value_len: cache.max_value_len(16) as u64,
        created_unix_ms: util::unix_ms(i.created),
        read_only: i.read_only,
    }
}

fn print_geometry(out: &mut impl Write, g: &GeometryJson) -> std::io::Result<()> {
    writeln!(out, "file        {}", g.path)?;
    writeln!(
        out,
        "geometry    {} ({} bytes), {} stripes x {} segments of {}, {} index slots, {} reader slots",
        size(g.file_size),
        g.file_size,
        g.stripes,
        g.segments,
        size(g.segment_size),
        g.index_slots,
        g.reader_slots
    )?;
    writeln!(
        out,
        "largest     value {} (with a 16-byte key)",
        size(g.max_value_len)
    )
}

pub fn create(path: &Path, g: &Geometry, json: bool) -> Result<(), Fail> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Fail::new(
            util::EXIT_ERROR,
            format!(
                "{}: already exists; refusing to touch it (remove it first, or choose another path)",
                path.display()
            ),
        ));
    }
    let mut o = Options::new().capacity(g.capacity);
    if let Some(n) = g.max_entries {
        o = o.max_entries(n);
    }
    if let Some(n) = g.stripes {
        o = o.stripes(n);
    }
    if let Some(n) = g.segments {
        o = o.segments(n);
    }
    if let Some(n) = g.reader_slots {
        o = o.reader_slots(n);
    }
    if let Some(t) = g.ttl {
        o = o.default_ttl(t);
    }
    let cache = Cache::open(path, o)?;
    let g = geometry(&cache);
    let mut out = std::io::stdout().lock();
    if json {
        print_json(&mut out, &g)
    } else {
        writeln!(out, "created {}", path.display())?;
        print_geometry(&mut out, &g)?;
        Ok(())
    }
}

#[derive(Serialize)]
struct MinMedMax {
    min: u64,
    median: u64,
    max: u64,
}

fn spread(mut v: Vec<u64>) -> MinMedMax {
    v.sort_unstable();
    MinMedMax {
        min: v.first().copied().unwrap_or(0),
        median: v.get(v.len() / 2).copied().unwrap_or(0),
        max: v.last().copied().unwrap_or(0),
    }
}

#[derive(Serialize)]
struct Fill {
    entries: u64,
    bytes_used: u64,
    capacity: u64,
    used_ratio: f64,
    stripe_entries: MinMedMax,
    stripe_bytes_used: MinMedMax,
}

#[derive(Serialize, Clone, Copy)]
struct Counters {
    hits: u64,
    misses: u64,
    hit_ratio: Option<f64>,
    expired: u64,
    inserts: u64,
    evictions: u64,
    index_evictions: u64,
    reinserts: u64,
    deletes: u64,
    corrupt: u64,
    mismatched: u64,
    pin_waits: u64,
    stripe_repairs: u64,
    lock_owner_deaths: u64,
    creates: u64,
    stale_served: u64,
    waits: u64,
    lock_timeouts: u64,
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn counters(s: &slotcache::Stats) -> Counters {
    Counters {
        hits: s.hits,
        misses: s.misses,
        hit_ratio: ratio(s.hits, s.hits + s.misses),
        expired: s.expired,
        inserts: s.inserts,
        evictions: s.evictions,
        index_evictions: s.index_evictions,
        reinserts: s.reinserts,
        deletes: s.deletes,
        corrupt: s.corrupt,
        mismatched: s.mismatched,
        pin_waits: s.pin_waits,
        stripe_repairs: s.stripe_repairs,
        lock_owner_deaths: s.lock_owner_deaths,
        creates: s.creates,
        stale_served: s.stale_served,
        waits: s.waits,
        lock_timeouts: s.lock_timeouts,
    }
}

#[derive(Serialize)]
struct Ages {
    walked: u64,
    oldest_secs: Option<f64>,
    newest_secs: Option<f64>,
}

#[derive(Serialize)]
struct Reader {
    slot: u32,
    owner_pid: u32,
    live: bool,
    pinned_stripes: u32,
}

#[derive(Serialize)]
struct StatsJson {
    geometry: GeometryJson,
    fill: Fill,
    counters: Counters,
    ages: Ages,
    live_readers: usize,
    readers: Vec<Reader>,
}

/// Oldest and newest live entry, by a lock-free walk.
fn ages(cache: &Cache) -> Result<Ages, Fail> {
    let now = SystemTime::now();
    let (mut walked, mut oldest, mut newest) = (0u64, None::<Duration>, None::<Duration>);
    for e in cache.iter() {
        let (age, _) = util::age_and_ttl(&e?.meta(), now);
        walked += 1;
        oldest = Some(oldest.map_or(age, |o| o.max(age)));
        newest = Some(newest.map_or(age, |n| n.min(age)));
    }
    Ok(Ages {
        walked,
        oldest_secs: oldest.map(|d| d.as_secs_f64()),
        newest_secs: newest.map(|d| d.as_secs_f64()),
    })
}

fn collect(cache: &Cache) -> Result<StatsJson, Fail> {
    let st = cache.stats();
    let per = cache.stripe_stats();
    let readers: Vec<Reader> = cache
        .readers()?
        .into_iter()
        .map(|r| Reader {
            slot: r.slot,
            owner_pid: r.owner_pid,
            live: r.live,
            pinned_stripes: r.pinned_stripes,
        })
        .collect();
    Ok(StatsJson {
        geometry: geometry(cache),
        fill: Fill {
            entries: st.entries,
            bytes_used: st.bytes_used,
            capacity: st.capacity,
            used_ratio: ratio(st.bytes_used, st.capacity).unwrap_or(0.0),
            stripe_entries: spread(per.iter().map(|s| s.entries).collect()),
            stripe_bytes_used: spread(per.iter().map(|s| s.bytes_used).collect()),
        },
        counters: counters(&st),
        ages: ages(cache)?,
        live_readers: readers.iter().filter(|r| r.live).count(),
        readers,
    })
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| dur(Duration::from_secs_f64(s)))
}

fn pct(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn print_stats(out: &mut impl Write, s: &StatsJson) -> std::io::Result<()> {
    print_geometry(out, &s.geometry)?;
    let f = &s.fill;
    writeln!(
        out,
        "fill        {} entries, {} of {} log bytes used ({:.1}%)",
        f.entries,
        size(f.bytes_used),
        size(f.capacity),
        f.used_ratio * 100.0
    )?;
    let (e, b) = (&f.stripe_entries, &f.stripe_bytes_used);
    writeln!(
        out,
        "per stripe  entries min/median/max {}/{}/{}, bytes {}/{}/{}",
        e.min,
        e.median,
        e.max,
        size(b.min),
        size(b.median),
        size(b.max)
    )?;
    let c = &s.counters;
    writeln!(
        out,
        "reads       {} hits, {} misses (hit ratio {}), {} expired, {} corrupt, {} of another type",
        c.hits,
        c.misses,
        pct(c.hit_ratio),
        c.expired,
        c.corrupt,
        c.mismatched
    )?;
    writeln!(
        out,
        "writes      {} inserts, {} deletes, {} evictions ({} index full), {} second chances, {} pin waits, {} stripe repairs, {} dead lock owners",
        c.inserts, c.deletes, c.evictions, c.index_evictions, c.reinserts, c.pin_waits, c.stripe_repairs, c.lock_owner_deaths
    )?;
    writeln!(
        out,
        "dogpile     {} regenerations, {} stale served, {} waits, {} lock timeouts",
        c.creates, c.stale_served, c.waits, c.lock_timeouts
    )?;
    writeln!(
        out,
        "ages        oldest {}, newest {} ({} live entries walked)",
        secs(s.ages.oldest_secs),
        secs(s.ages.newest_secs),
        s.ages.walked
    )?;
    writeln!(
        out,
        "readers     {} live of {} slots ever claimed",
        s.live_readers,
        s.readers.len()
    )?;
    let mut by_pid: Vec<(u32, usize, u32)> = Vec::new();
    for r in s.readers.iter().filter(|r| r.live) {
        match by_pid.iter_mut().find(|p| p.0 == r.owner_pid) {
            Some(p) => {
                p.1 += 1;
                p.2 += r.pinned_stripes;
            }
            None => by_pid.push((r.owner_pid, 1, r.pinned_stripes)),
        }
    }
    for (pid, slots, pins) in by_pid {
        writeln!(
            out,
            "            pid {pid}: {slots} slot(s), {pins} stripe(s) pinned now"
        )?;
    }
    Ok(())
}

pub fn stats(path: &Path, json: bool) -> Result<(), Fail> {
    let cache = open_read(path)?;
    let s = collect(&cache)?;
    let mut out = std::io::stdout().lock();
    if json {
        print_json(&mut out, &s)
    } else {
        print_stats(&mut out, &s)?;
        Ok(())
    }
}

#[derive(Serialize)]
struct Rates {
    interval_secs: f64,
    hits_per_sec: f64,
    misses_per_sec: f64,
    sets_per_sec: f64,
    deletes_per_sec: f64,
    evictions_per_sec: f64,
    hit_ratio: Option<f64>,
}

#[derive(Serialize)]
struct WatchJson {
    unix_ms: u64,
    entries: u64,
    bytes_used: u64,
    capacity: u64,
    live_readers: usize,
    rates: Rates,
    counters: Counters,
}

/// Redraws a live view every `every` until interrupted (or `count` times).
pub fn watch(path: &Path, every: Duration, count: Option<u64>, json: bool) -> Result<(), Fail> {
    let cache = open_read(path)?;
    let mut prev = cache.stats();
    let mut at = Instant::now();
    let mut n = 0;
    while count.is_none_or(|c| n < c) {
        std::thread::sleep(every);
        n += 1;
        let st = cache.stats();
        let now = Instant::now();
        let secs = now.duration_since(at).as_secs_f64().max(1e-9);
        let d = |new: u64, old: u64| new.wrapping_sub(old) as f64 / secs;
        let (dh, dm) = (
            st.hits.wrapping_sub(prev.hits),
            st.misses.wrapping_sub(prev.misses),
        );
        let live = cache.readers()?.iter().filter(|r| r.live).count();
        let w = WatchJson {
            unix_ms: util::unix_ms(SystemTime::now()),
            entries: st.entries,
            bytes_used: st.bytes_used,
            capacity: st.capacity,
            live_readers: live,
            rates: Rates {
                interval_secs: secs,
                hits_per_sec: d(st.hits, prev.hits),
                misses_per_sec: d(st.misses, prev.misses),
                sets_per_sec: d(st.inserts, prev.inserts),
                deletes_per_sec: d(st.deletes, prev.deletes),
                evictions_per_sec: d(st.evictions, prev.evictions),
                hit_ratio: ratio(dh, dh + dm),
            },
            counters: counters(&st),
        };
        let mut out = std::io::stdout().lock();
        if json {
            print_json(&mut out, &w)?;
        } else {
            let r = &w.rates;
            // Clear the screen and home the cursor, like `top`.
            write!(out, "\x1b[2J\x1b[H")?;
            writeln!(
                out,
                "slotcache stats --watch {}   every {} (Ctrl-C to stop)\n",
                path.display(),
                dur(every)
            )?;
            writeln!(
                out,
                "entries      {:>12}    used {} of {} ({:.1}%)",
                w.entries,
                size(w.bytes_used),
                size(w.capacity),
                ratio(w.bytes_used, w.capacity).unwrap_or(0.0) * 100.0
            )?;
            writeln!(out, "live readers {:>12}", w.live_readers)?;
            writeln!(out, "hits/s       {:>12.0}", r.hits_per_sec)?;
            writeln!(out, "misses/s     {:>12.0}", r.misses_per_sec)?;
            writeln!(out, "hit ratio    {:>12}", pct(r.hit_ratio))?;
            writeln!(out, "sets/s       {:>12.0}", r.sets_per_sec)?;
            writeln!(out, "deletes/s    {:>12.0}", r.deletes_per_sec)?;
            writeln!(out, "evictions/s  {:>12.0}", r.evictions_per_sec)?;
            out.flush()?;
        }
        prev = st;
        at = now;
    }
    Ok(())
}

#[derive(Serialize)]
struct VerifyJson {
    clean: bool,
    /// The walk needs stripe locks, which a read-only handle cannot take.
    full_check: bool,
    records_scanned: u64,
    bad_checksums: u64,
    unreachable_bad_checksums: u64,
    dangling_slots: u64,
    damaged_stripes: u64,
    live_entries: u64,
    entries_drift: u64,
    live_pins: u64,
    repair: Option<RepairJson>,
}

#[derive(Serialize)]
struct RepairJson {
    stripes_reset: u64,
    slots_cleared: u64,
    entries_fixed: u64,
}

/// `verify`: `Cache::verify` writes no byte, but walks each stripe under
/// its write lock (waiting only for a write in progress), which a
/// read-only handle cannot take: the file is opened for writing when this
/// user may, and checked as far as a read-only handle can otherwise.
pub fn verify(path: &Path, repair: bool, json: bool) -> Result<(), Fail> {
    let cache = open_write(path)?;
    let read_only = cache.info().read_only;
    let pb = util::progress(0, "verifying");
    let (r, repaired) = if repair {
        let done = cache.repair()?;
        (
            done.before,
            Some(RepairJson {
                stripes_reset: done.stripes_reset,
                slots_cleared: done.slots_cleared,
                entries_fixed: done.entries_fixed,
            }),
        )
    } else {
        (cache.verify()?, None)
    };
    pb.finish_and_clear();
    let v = VerifyJson {
        clean: r.is_clean(),
        full_check: !read_only,
        records_scanned: r.records_scanned,
        bad_checksums: r.bad_checksums,
        unreachable_bad_checksums: r.unreachable_bad_checksums,
        dangling_slots: r.dangling_slots,
        damaged_stripes: r.damaged_stripes,
        live_entries: r.live_entries,
        entries_drift: r.entries_drift,
        live_pins: r.live_pins,
        repair: repaired,
    };
    let mut out = std::io::stdout().lock();
    if json {
        print_json(&mut out, &v)?;
    } else {
        if read_only {
            eprintln!(
                "slotcache: {}: cannot be written by this user, so only live pins were checked (the full check takes stripe locks; it writes nothing)",
                path.display()
            );
        }
        writeln!(
            out,
            "{}: {}",
            path.display(),
            match (v.clean, v.full_check) {
                (false, _) => "DAMAGED",
                (true, true) => "clean",
                (true, false) => "not walked (read-only: live pins only)",
            }
        )?;
        writeln!(
            out,
            "records scanned {}, live entries {}, entries drift {}, live pins {}",
            v.records_scanned, v.live_entries, v.entries_drift, v.live_pins
        )?;
        writeln!(
            out,
            "damaged stripes {}, bad checksums {}, dangling slots {}, unreachable bad records {}",
            v.damaged_stripes, v.bad_checksums, v.dangling_slots, v.unreachable_bad_checksums
        )?;
        if let Some(rp) = &v.repair {
            writeln!(
                out,
                "repaired: {} stripe(s) reset, {} slot(s) cleared, {} entry counter(s) fixed",
                rp.stripes_reset, rp.slots_cleared, rp.entries_fixed
            )?;
        }
    }
    // After a repair the file is clean again; the exit code says what was
    // found only when nothing was reset.
    if !v.clean && v.repair.is_none() {
        return Err(Fail::Quiet(util::EXIT_DAMAGED));
    }
    Ok(())
}
