//! The process metrics every Prometheus client library exports, under their standard names,
//! read from `/proc/self` (procfs) at each scrape: nothing is sampled in between.
//! A value that cannot be read (no `/proc`, a seccomp profile that hides it) is left out of
//! the scrape rather than reported as 0. Not Linux: none.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Registered without a prefix: `process_*`.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Read `/proc/self` now.
#[cfg(target_os = "linux")]
pub fn sample() -> Sample {
    use procfs::prelude::*;
    use procfs::process::{LimitValue, Process};
    let mut s = Sample::default();
    let Ok(me) = Process::myself() else { return s };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        if ticks > 0.0 {
            s.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            s.start_time_seconds =
                procfs::boot_time_secs().ok().map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        }
        s.resident_memory_bytes = Some(stat.rss_bytes().get());
        s.virtual_memory_bytes = Some(stat.vsize);
    }
    s.open_fds = me.fd_count().ok().map(|n| n as u64);
    s.max_fds = me.limits().ok().and_then(|l| match l.max_open_files.soft_limit {
        LimitValue::Value(v) => Some(v),
        LimitValue::Unlimited => None,
    });
    s
}

#[cfg(not(target_os = "linux"))]
pub fn sample() -> Sample {
    Sample::default()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = sample();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?;
            m.encode(e)?;
        }
        let gauges: [(&str, &str, Option<f64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
            ("process_open_fds", "Number of open file descriptors.", s.open_fds.map(|v| v as f64)),
            ("process_max_fds", "Maximum number of open file descriptors.", s.max_fds.map(|v| v as f64)),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn reads_this_process() {
        let s = super::sample();
        assert!(s.resident_memory_bytes.unwrap() > 0);
        assert!(s.virtual_memory_bytes.unwrap() >= s.resident_memory_bytes.unwrap());
        assert!(s.open_fds.unwrap() >= 3, "stdin, stdout, stderr at least");
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = s.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0, "{started} vs {now}");
        assert!(s.cpu_seconds.unwrap() >= 0.0);
    }
}
