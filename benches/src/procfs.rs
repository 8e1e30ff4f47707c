//! What the harness reads from `/proc`: resident memory, CPU time, open descriptors and
//! listening sockets of the processes it measures. Linux only.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| io::Error::other(format!("no VmRSS for pid {pid}")))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time `pid` has used (`utime + stime` of `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::other(format!("unreadable stat for pid {pid}")))?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_s()))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the last
    // ')'. There, field 3 (state) comes first, so utime (14) and stime (15) are at 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once; 100 (what Linux uses) if that fails.
fn clock_ticks_per_s() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &f64| t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Number of open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Whether some process has a TCP socket listening on `port` (IPv4 or IPv6, any address), in
/// the calling thread's network namespace (`/proc/thread-self/net`: the WAN testbed runs
/// threads in other namespaces than the process's first thread).
pub fn is_listening(port: u16) -> bool {
    ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
        .iter()
        .any(|path| std::fs::read_to_string(path).is_ok_and(|table| listens_in(&table, port)))
}

fn listens_in(table: &str, port: u16) -> bool {
    // Lines: "sl local_address rem_address st ..." with addresses as HEXIP:HEXPORT and the
    // state in hex (0A = LISTEN).
    table.lines().skip(1).any(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1);
        let state = f.nth(1);
        let port_hex = local.and_then(|l| l.rsplit(':').next());
        state == Some("0A") && port_hex.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
    })
}

/// Datagrams dropped by the kernel (full receive buffer) on the UDP sockets bound to local
/// `port`, in the calling thread's network namespace: the last column of
/// `/proc/thread-self/net/udp` and `udp6`.
pub fn udp_drops(port: u16) -> u64 {
    ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| drops_in(&table, port))
        .sum()
}

/// Drops of the sockets bound to local `port` in one `/proc/.../net/udp` table.
pub fn drops_in(table: &str, port: u16) -> u64 {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let local = line.split_whitespace().nth(1);
            let port_hex = local.and_then(|l| l.rsplit(':').next());
            port_hex.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
        })
        .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tnodepass\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(4321));
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(267));
    }

    #[test]
    fn finds_a_listener() {
        let table = "  sl  local_address rem_address   st tx_queue\n   \
                     0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n   \
                     1: 0100007F:0050 0100007F:1F90 01 00000000:00000000\n";
        assert!(listens_in(table, 8080));
        assert!(!listens_in(table, 80)); // established, not listening
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening(l.local_addr().unwrap().port()));
    }

    #[test]
    fn counts_udp_drops_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  \
                     1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 17\n  \
                     2: 0100007F:0050 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 5\n";
        assert_eq!(drops_in(table, 8080), 17);
        assert_eq!(drops_in(table, 80), 5);
        assert_eq!(drops_in(table, 81), 0);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(fd_count(me).unwrap() > 2);
        cpu_time(me).unwrap();
    }
}
