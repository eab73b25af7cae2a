//! Host networking through netlink (rtnetlink), not `ip`: links, addresses and routes of the node, the
//! VXLAN device, pod veth pairs and what goes inside a pod's namespace. Pod start is on this path: a
//! netlink request is a syscall, an `ip` call a fork and exec (about a millisecond each).
//!
//! Each [`run`] is one short-lived thread with its own netlink socket, opened in the network namespace
//! asked for (a socket belongs to the namespace it was created in) and its own current-thread runtime:
//! callable from synchronous code and from inside the agent's runtime alike, and never moving the
//! caller's thread into another namespace.

use std::{future::Future, net::Ipv4Addr, os::fd::RawFd};

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};
use thiserror::Error;

/// Errors of netlink requests.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The netlink socket or the helper thread could not be set up.
    #[error("netlink: {0}")]
    Setup(String),
    /// The kernel refused a request.
    #[error("netlink {what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A link that must exist does not.
    #[error("no interface {0}")]
    NoLink(String),
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

fn already_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// What berth reads of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// For a VXLAN device: its UDP port and whether it is a collect-metadata (external) device.
    pub vxlan: Option<(u16, bool)>,
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        mac: None,
        mtu: 0,
        vxlan: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                link.mac = Some(mac);
            }
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(vx)) = info {
                        let port = vx
                            .iter()
                            .find_map(|v| match v {
                                InfoVxlan::Port(p) => Some(*p),
                                _ => None,
                            })
                            .unwrap_or(0);
                        let external = vx.iter().any(|v| matches!(v, InfoVxlan::CollectMetadata(true)));
                        link.vxlan = Some((port, external));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// Requests on one netlink socket (cheap to clone).
#[derive(Clone)]
pub struct Nl(Handle);

impl Nl {
    /// The link named `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut links = self.0.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_of(&msg))),
            Ok(None) => Ok(None),
            // ENODEV: no such link.
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(req(format!("get link {name}"))(e)),
        }
    }

    /// The link named `name`; an error if it does not exist.
    pub async fn require(&self, name: &str) -> Result<Link, NetlinkError> {
        self.link(name)
            .await?
            .ok_or_else(|| NetlinkError::NoLink(name.into()))
    }

    /// Deletes a link (and, for a veth, its peer).
    pub async fn del_link(&self, index: u32) -> Result<(), NetlinkError> {
        self.0
            .link()
            .del(index)
            .execute()
            .await
            .map_err(req(format!("delete link {index}")))
    }

    /// A veth pair `host` <-> `peer`, both with `mtu`, the peer created directly in the namespace open at
    /// `peer_netns` (its name, `eth0` say, may exist in this one).
    pub async fn add_veth(
        &self,
        host: &str,
        peer: &str,
        peer_netns: RawFd,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_netns)
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.0
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(req(format!("add veth {host}")))
    }

    /// The VXLAN device: VNI `vni`, UDP `port`, on `dev`, no learning, `mtu`, `mac` if given.
    pub async fn add_vxlan(
        &self,
        name: &str,
        vni: u32,
        port: u16,
        dev: u32,
        mtu: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<(), NetlinkError> {
        let mut b = LinkMessageBuilder::<LinkVxlan>::new(name)
            .id(vni)
            .port(port)
            .dev(dev)
            .learning(false)
            .mtu(mtu);
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        self.0
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(req(format!("add vxlan {name}")))
    }

    /// Sets a link up, with `mtu` and ARP on or off when given.
    pub async fn set_link(
        &self,
        index: u32,
        up: bool,
        mtu: Option<u32>,
        arp: Option<bool>,
    ) -> Result<(), NetlinkError> {
        let mut b = LinkUnspec::new_with_index(index);
        if up {
            b = b.up();
        }
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if let Some(a) = arp {
            b = b.arp(a);
        }
        self.0
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(req(format!("set link {index}")))
    }

    /// Adds `addr/prefix` to a link; present already is fine.
    pub async fn add_addr(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        match self.0.address().add(index, addr.into(), prefix).execute().await {
            Err(e) if already_exists(&e) => Ok(()),
            other => other.map_err(req(format!("add address {addr}/{prefix}"))),
        }
    }

    /// Adds or replaces the route to `dst/prefix` out of `dev`, with `src` as preferred source and
    /// `gateway` (reached on-link) when given.
    pub async fn replace_route(
        &self,
        dst: Ipv4Addr,
        prefix: u8,
        dev: u32,
        src: Option<Ipv4Addr>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), NetlinkError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, prefix)
            .output_interface(dev);
        if let Some(s) = src {
            b = b.pref_source(s);
        }
        if let Some(g) = gateway {
            b = b.gateway(g).onlink();
        }
        self.0
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(req(format!("route {dst}/{prefix}")))
    }
}

/// Runs `f` with a netlink socket in network namespace `netns` (an `ip netns` name; `None`: the
/// caller's namespace), on a thread of its own, and returns its result.
pub fn run<T, F, Fut>(netns: Option<&str>, f: F) -> Result<T, NetlinkError>
where
    T: Send,
    F: FnOnce(Nl) -> Fut + Send,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    std::thread::scope(|s| {
        // A new thread starts in its creator's namespace; only a named one is entered.
        s.spawn(|| {
            if let Some(name) = netns {
                crate::netns::enter(name).map_err(|e| NetlinkError::Setup(e.to_string()))?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| NetlinkError::Setup(e.to_string()))?;
            runtime.block_on(async {
                let (connection, handle, _) =
                    rtnetlink::new_connection().map_err(|e| NetlinkError::Setup(e.to_string()))?;
                let conn = tokio::spawn(connection);
                let out = f(Nl(handle)).await;
                conn.abort();
                out
            })
        })
        .join()
        .map_err(|_| NetlinkError::Setup("the netlink thread panicked".into()))?
    })
}
