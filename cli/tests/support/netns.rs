//! Brokers as separate hosts: one Linux network namespace per broker, one
//! veth pair per pair of brokers (a full mesh, so any single link can be
//! cut), and one veth pair from the test's own namespace to each broker for
//! clients. Every broker has one address (on its loopback) that the others
//! reach through host routes over their direct link.
//!
//! Needs root and `ip` (iproute2). Everything it creates (namespaces, links,
//! addresses) is removed when the mesh is dropped, also when a test fails.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A full mesh of `n` namespaces.
pub struct Mesh {
    tag: String,
    subnet: String,
    n: usize,
}

impl Mesh {
    /// Whether namespaces can be made here (root, iproute2).
    pub fn available() -> bool {
        let probe = format!("strand-probe-{}", std::process::id());
        let ok = ip(&["netns", "add", &probe]).is_ok();
        if ok {
            let _ = ip(&["netns", "del", &probe]);
        }
        ok
    }

    /// Creates the namespaces and links.
    ///
    /// # Errors
    /// A failed `ip` command (what was made so far is removed).
    pub fn create(n: usize) -> Result<Mesh, String> {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let m = Mesh {
            tag: format!("{}{k}", pid % 10_000),
            subnet: format!("10.{}.{}", 100 + pid % 100, k % 250),
            n,
        };
        m.build()?;
        Ok(m)
    }

    fn ns(&self, i: usize) -> String {
        format!("strand-{}-{i}", self.tag)
    }

    fn link(&self, i: usize, j: usize) -> String {
        format!("s{}x{i}{j}", self.tag)
    }

    fn client_link(&self, i: usize) -> (String, String) {
        (format!("s{}r{i}", self.tag), format!("s{}n{i}", self.tag))
    }

    /// The address of broker `i` (1-based).
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{i}", self.subnet)
    }

    fn client_addr(&self) -> String {
        format!("{}.250", self.subnet)
    }

    /// The command prefix that runs a program in broker `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.ns(i)]
    }

    fn build(&self) -> Result<(), String> {
        for i in 1..=self.n {
            let ns = self.ns(i);
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/32", self.addr(i)), "dev", "lo"])?;
        }
        for i in 1..=self.n {
            for j in (i + 1)..=self.n {
                let (a, b) = (self.link(i, j), self.link(j, i));
                ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
                ip(&["link", "set", &a, "netns", &self.ns(i)])?;
                ip(&["link", "set", &b, "netns", &self.ns(j)])?;
                self.link_up(i, j)?;
            }
        }
        let client = self.client_addr();
        ip(&["addr", "add", &format!("{client}/32"), "dev", "lo"])?;
        for i in 1..=self.n {
            let (root, inner) = self.client_link(i);
            ip(&["link", "add", &root, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &self.ns(i)])?;
            ip(&["link", "set", &root, "up"])?;
            ip(&["-n", &self.ns(i), "link", "set", &inner, "up"])?;
            ip(&[
                "route",
                "replace",
                &format!("{}/32", self.addr(i)),
                "dev",
                &root,
                "src",
                &client,
            ])?;
            ip(&[
                "-n",
                &self.ns(i),
                "route",
                "replace",
                &format!("{client}/32"),
                "dev",
                &inner,
            ])?;
        }
        Ok(())
    }

    /// Brings the link between `i` and `j` up (and its routes back).
    fn link_up(&self, i: usize, j: usize) -> Result<(), String> {
        for (x, y) in [(i, j), (j, i)] {
            let ns = self.ns(x);
            let dev = self.link(x, y);
            ip(&["-n", &ns, "link", "set", &dev, "up"])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "replace",
                &format!("{}/32", self.addr(y)),
                "dev",
                &dev,
            ])?;
        }
        Ok(())
    }

    /// Cuts the link between brokers `i` and `j` (both directions).
    pub fn cut(&self, i: usize, j: usize) {
        for (x, y) in [(i, j), (j, i)] {
            if let Err(e) = ip(&["-n", &self.ns(x), "link", "set", &self.link(x, y), "down"]) {
                eprintln!("cut {i}-{j}: {e}");
            }
        }
    }

    /// Restores the link between brokers `i` and `j`.
    pub fn heal(&self, i: usize, j: usize) {
        if let Err(e) = self.link_up(i, j) {
            eprintln!("heal {i}-{j}: {e}");
        }
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        for i in 1..=self.n {
            for j in (i + 1)..=self.n {
                self.heal(i, j);
            }
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for i in 1..=self.n {
            // Deleting a namespace deletes the veth ends inside it, and so
            // their peers.
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.client_link(i).0]);
            let _ = ip(&["route", "del", &format!("{}/32", self.addr(i))]);
        }
        let _ = ip(&["addr", "del", &format!("{}/32", self.client_addr()), "dev", "lo"]);
    }
}
