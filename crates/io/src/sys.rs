//! Thin wrappers over the system calls this crate needs. Every `unsafe` block of the crate that
//! talks to the kernel lives here, next to the reason it is sound.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Turns a `-1` return into the thread's errno.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Opens `path` (a character device such as `/dev/net/tun`) read-write, non-blocking,
/// close-on-exec.
pub(crate) fn open_rw_nonblock(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let fd = cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `TUNSETIFF`: attaches the tun file descriptor to interface `name` (created if missing) with
/// `flags`; returns the name the kernel chose (it fills in `%d` patterns and empty names).
pub(crate) fn tun_set_iff(
    fd: BorrowedFd<'_>,
    name: &str,
    flags: libc::c_short,
) -> io::Result<String> {
    if name.len() >= libc::IFNAMSIZ || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name longer than 15 bytes or containing NUL",
        ));
    }
    // SAFETY: ifreq is a plain C struct (arrays and a union of integers/sockaddrs) for which
    // all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is and which lives
    // for the whole call.
    cvt(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut libc::ifreq,
        )
    })?;
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "kernel returned a non-UTF-8 name",
        )
    })
}

/// An ioctl whose argument is passed by value (`TUNSETOFFLOAD`).
pub(crate) fn ioctl_value(
    fd: BorrowedFd<'_>,
    req: libc::Ioctl,
    value: libc::c_ulong,
) -> io::Result<()> {
    // SAFETY: the requests this is called with take their argument by value, not as a
    // pointer, so no memory is read or written through it.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, value) }).map(drop)
}

/// An ioctl whose argument is a pointer to one `c_int` (`TUNSETVNETHDRSZ`).
pub(crate) fn ioctl_int(
    fd: BorrowedFd<'_>,
    req: libc::Ioctl,
    value: libc::c_int,
) -> io::Result<()> {
    let mut v = value;
    // SAFETY: the request reads one c_int through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v as *mut libc::c_int) }).map(drop)
}

/// `read(2)`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `writev(2)` of up to two slices.
pub(crate) fn writev(fd: BorrowedFd<'_>, bufs: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2];
    let n = bufs.len().min(2);
    for (v, b) in iov.iter_mut().zip(bufs.iter()) {
        v.iov_base = b.as_ptr() as *mut libc::c_void;
        v.iov_len = b.len();
    }
    // SAFETY: the first `n` iovecs describe live slices borrowed for the call; the kernel
    // only reads through them.
    cvt_size(unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), n as libc::c_int) })
}

/// Reusable iovecs for a gathering `writev(2)` of many slices.
pub(crate) struct Gather {
    iovs: Vec<libc::iovec>,
}

// SAFETY: the pointers inside are only set and used within one `writev` call on `&mut self`.
unsafe impl Send for Gather {}

impl Gather {
    pub(crate) fn new(cap: usize) -> Self {
        Gather {
            iovs: Vec::with_capacity(cap.max(1)),
        }
    }

    /// Writes the slices, in order, as one `writev` (at most the capacity given to `new`;
    /// further slices are left out and the short count shows it).
    pub(crate) fn writev<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        pieces: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<usize> {
        self.iovs.clear();
        let cap = self.iovs.capacity();
        for p in pieces.take(cap) {
            self.iovs.push(libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            });
        }
        // SAFETY: every iovec points at a slice borrowed for 'a, which outlives this call, and
        // the kernel only reads through them; the count is the vector's length.
        let n = unsafe {
            libc::writev(
                fd.as_raw_fd(),
                self.iovs.as_ptr(),
                self.iovs.len() as libc::c_int,
            )
        };
        self.iovs.clear();
        cvt_size(n)
    }
}

/// `setsockopt` with an integer value.
pub(crate) fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is one c_int, passed by pointer with its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Pins the calling thread to one CPU.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu index too large",
        ));
    }
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the set is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(drop)
}

/// `setns(2)` for the calling thread into the network namespace behind `fd`.
pub(crate) fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and a flag; it touches no memory of ours.
    cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

// ---------------------------------------------------------------------------------------------
// epoll and eventfd

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(crate) fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the call (ignored for EPOLL_CTL_DEL).
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `events`; returns how many.
    pub(crate) fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout_ms: i32,
    ) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `events` is valid for writes of `max` entries for the call.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        match cvt(n) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// A non-blocking eventfd, used to wake every worker at once for a stop.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result is checked.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (making it readable until read, which nobody does).
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes exactly the 8 bytes of `one`, which live for the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    cvt_size(n).map(drop)
}

// ---------------------------------------------------------------------------------------------
// Socket addresses

/// Writes `addr` into `storage`, returning the length to pass to the kernel.
pub(crate) fn sockaddr_from(
    addr: &SocketAddr,
    storage: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a socket address the kernel wrote into `storage`.
pub(crate) fn sockaddr_to(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which fits and is aligned.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6, which fits and is aligned.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// recvmmsg / sendmmsg

/// Control-message room per message: IP_PKTINFO or IPV6_PKTINFO, plus UDP_GRO or UDP_SEGMENT.
const CMSG_WORDS: usize = 16; // 128 bytes, 8-byte aligned
const _: () = assert!(CMSG_WORDS * 8 >= 2 * 32 + 24 + 16);

/// What the kernel said about one received datagram.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecvInfo {
    /// Bytes received.
    pub(crate) len: usize,
    /// The sender.
    pub(crate) src: Option<SocketAddr>,
    /// The local address it was sent to (from IP_PKTINFO / IPV6_PKTINFO).
    pub(crate) dst: Option<std::net::IpAddr>,
    /// The segment size of a GRO-coalesced datagram (UDP_GRO), if coalesced.
    pub(crate) gro_size: Option<u16>,
    /// The datagram was longer than the buffer and was cut.
    pub(crate) truncated: bool,
}

/// Reusable state for `recvmmsg(2)`: headers, iovecs, addresses and control buffers for up to
/// `cap` messages, allocated once.
pub(crate) struct MultiRecv {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// The iovecs of [`MultiRecv::recv_scatter`], several per message.
    scatter: Vec<libc::iovec>,
    /// Where each message's iovecs start in `scatter`, and how many it has.
    spans: Vec<(usize, usize)>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u64; CMSG_WORDS]>,
    infos: Vec<RecvInfo>,
}

// SAFETY: the raw pointers inside are only ever set and dereferenced (by the kernel) within
// one `recv` call, during which `self` is exclusively borrowed; between calls they dangle
// harmlessly and are never read.
unsafe impl Send for MultiRecv {}

impl MultiRecv {
    pub(crate) fn new(cap: usize) -> Self {
        // SAFETY: mmsghdr and sockaddr_storage are plain C structs for which all-zero bytes
        // (null pointers, zero lengths) are valid.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        MultiRecv {
            hdrs: vec![zero_hdr; cap],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                cap
            ],
            scatter: Vec::new(),
            spans: Vec::with_capacity(cap),
            addrs: vec![zero_addr; cap],
            cmsgs: vec![[0u64; CMSG_WORDS]; cap],
            infos: vec![RecvInfo::default(); cap],
        }
    }

    /// One `recvmmsg` (non-blocking) into `bufs`, at most `capacity()` of them; returns how
    /// many messages arrived. Their details are in [`MultiRecv::info`].
    pub(crate) fn recv<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: impl Iterator<Item = &'a mut [u8]>,
    ) -> io::Result<usize> {
        let mut n = 0;
        for (i, buf) in bufs.take(self.hdrs.len()).enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            n = i + 1;
        }
        if n == 0 {
            return Ok(0);
        }
        for i in 0..n {
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        self.receive(fd, n)
    }

    /// One `recvmmsg` (non-blocking) whose messages each scatter over several buffers, the
    /// kernel filling them in order: `bufs` yields (message index, buffer), the indices
    /// starting at 0 and rising by at most one. Returns how many messages arrived; a
    /// message's [`RecvInfo::len`] counts the bytes over all its buffers.
    pub(crate) fn recv_scatter<'a>(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: impl Iterator<Item = (usize, &'a mut [u8])>,
    ) -> io::Result<usize> {
        self.scatter.clear();
        self.spans.clear();
        for (m, buf) in bufs {
            if m >= self.hdrs.len() || m > self.spans.len() {
                break;
            }
            if m == self.spans.len() {
                self.spans.push((self.scatter.len(), 0));
            }
            self.scatter.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            self.spans[m].1 += 1;
        }
        let n = self.spans.len();
        if n == 0 {
            return Ok(0);
        }
        // `scatter` is complete: its elements no longer move.
        for (i, &(start, count)) in self.spans.iter().enumerate() {
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_iov = self.scatter[start..].as_mut_ptr();
            h.msg_hdr.msg_iovlen = count;
        }
        self.receive(fd, n)
    }

    /// The `recvmmsg` itself, for the first `n` headers, whose iovecs are set.
    fn receive(&mut self, fd: BorrowedFd<'_>, n: usize) -> io::Result<usize> {
        for i in 0..n {
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_WORDS * 8;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `n` headers point at iovecs (in `iovs` or `scatter`), addresses
        // and control buffers owned by `self`, none of which moves or is freed before the call
        // returns; the iovecs point at buffers the caller borrowed mutably for the duration of
        // `recv`/`recv_scatter`, which outlives this call. All are valid for writes of the
        // lengths given.
        let got = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = cvt(got)? as usize;
        for i in 0..got {
            let h = &self.hdrs[i];
            let mut info = RecvInfo {
                len: h.msg_len as usize,
                src: sockaddr_to(&self.addrs[i]),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                ..RecvInfo::default()
            };
            parse_cmsgs(&h.msg_hdr, &mut info);
            self.infos[i] = info;
        }
        Ok(got)
    }

    pub(crate) fn info(&self, i: usize) -> RecvInfo {
        self.infos.get(i).copied().unwrap_or_default()
    }
}

fn parse_cmsgs(msg: &libc::msghdr, info: &mut RecvInfo) {
    // SAFETY: `msg` is a header the kernel just filled; CMSG_FIRSTHDR/NXTHDR only walk
    // within msg_control..msg_control+msg_controllen, and every cmsg is read with a length
    // check against the data size it must hold.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let hdr = &*c;
            let data = libc::CMSG_DATA(c);
            let data_len = hdr.cmsg_len.saturating_sub(libc::CMSG_LEN(0) as usize);
            match (hdr.cmsg_level, hdr.cmsg_type) {
                (libc::SOL_UDP, libc::UDP_GRO) if data_len >= 4 => {
                    let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    info.gro_size = u16::try_from(v).ok().filter(|s| *s > 0);
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO)
                    if data_len >= std::mem::size_of::<libc::in_pktinfo>() =>
                {
                    let p = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                    info.dst = Some(Ipv4Addr::from(p.ipi_addr.s_addr.to_ne_bytes()).into());
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
                    if data_len >= std::mem::size_of::<libc::in6_pktinfo>() =>
                {
                    let p = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    info.dst = Some(Ipv6Addr::from(p.ipi6_addr.s6_addr).into());
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
}

/// Reusable state for `sendmmsg(2)`: headers, iovecs, addresses and control buffers,
/// allocated once.
pub(crate) struct MultiSend {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<[u64; CMSG_WORDS]>,
}

// SAFETY: the raw pointers inside are only set and used within the life of one `Sending`,
// which borrows `self` exclusively and the payloads for its whole life.
unsafe impl Send for MultiSend {}

impl MultiSend {
    pub(crate) fn new(cap: usize, max_iov: usize) -> Self {
        // SAFETY: plain C structs; all-zero is valid.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        MultiSend {
            hdrs: vec![zero_hdr; cap],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                max_iov.max(cap)
            ],
            addrs: vec![zero_addr; cap],
            cmsgs: vec![[0u64; CMSG_WORDS]; cap],
        }
    }

    /// Starts collecting messages whose payloads live for `'a`.
    pub(crate) fn start<'a>(&mut self) -> Sending<'_, 'a> {
        Sending {
            ms: self,
            n: 0,
            iov_at: 0,
            _payloads: std::marker::PhantomData,
        }
    }
}

/// Messages being collected for one `sendmmsg`. Payload slices are borrowed for `'a`, so
/// they outlive the call that hands their addresses to the kernel.
pub(crate) struct Sending<'s, 'a> {
    ms: &'s mut MultiSend,
    n: usize,
    iov_at: usize,
    _payloads: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Sending<'_, 'a> {
    /// Messages collected.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Whether another message with `pieces` payload pieces fits.
    pub(crate) fn has_room(&self, pieces: usize) -> bool {
        self.n < self.ms.hdrs.len() && self.iov_at + pieces <= self.ms.iovs.len()
    }

    /// Starts a message to `dst`; with `segment`, the kernel cuts its payload into datagrams
    /// of that size (UDP GSO). Returns false (and adds nothing) when full.
    pub(crate) fn push_msg(&mut self, dst: &SocketAddr, segment: Option<u16>) -> bool {
        if !self.has_room(1) {
            return false;
        }
        let i = self.n;
        let namelen = sockaddr_from(dst, &mut self.ms.addrs[i]);
        let ctl_len = match segment {
            Some(seg) => write_segment_cmsg(&mut self.ms.cmsgs[i], seg),
            None => 0,
        };
        let addr_ptr = (&mut self.ms.addrs[i] as *mut libc::sockaddr_storage).cast();
        let ctl_ptr = if ctl_len > 0 {
            self.ms.cmsgs[i].as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        // iov_at < iovs.len() by has_room(1).
        let iov_ptr = self.ms.iovs[self.iov_at..].as_mut_ptr();
        let h = &mut self.ms.hdrs[i];
        h.msg_hdr.msg_name = addr_ptr;
        h.msg_hdr.msg_namelen = namelen;
        h.msg_hdr.msg_iov = iov_ptr;
        h.msg_hdr.msg_iovlen = 0;
        h.msg_hdr.msg_control = ctl_ptr;
        h.msg_hdr.msg_controllen = ctl_len;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
        self.n += 1;
        true
    }

    /// Appends a payload piece to the current message. Returns false (and adds nothing) when
    /// there is no current message or no iovec left.
    pub(crate) fn push_piece(&mut self, piece: &'a [u8]) -> bool {
        if self.n == 0 || self.iov_at >= self.ms.iovs.len() {
            return false;
        }
        self.ms.iovs[self.iov_at] = libc::iovec {
            iov_base: piece.as_ptr() as *mut libc::c_void,
            iov_len: piece.len(),
        };
        self.iov_at += 1;
        self.ms.hdrs[self.n - 1].msg_hdr.msg_iovlen += 1;
        true
    }

    /// One non-blocking `sendmmsg` of the messages collected; returns how many the kernel
    /// took (an error means it took none).
    pub(crate) fn send(self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        if self.n == 0 {
            return Ok(0);
        }
        // SAFETY: the first `n` headers point at addresses, iovecs and control data owned by
        // `self.ms` (fixed-size vectors, never reallocated), and the iovecs at payload slices
        // borrowed for 'a, which outlives this call; the kernel only reads them.
        let sent = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.ms.hdrs.as_mut_ptr(),
                self.n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        cvt(sent).map(|s| s as usize)
    }
}

/// Writes a `UDP_SEGMENT` control message; returns its space.
fn write_segment_cmsg(buf: &mut [u64; CMSG_WORDS], seg: u16) -> usize {
    // SAFETY: a msghdr whose control buffer is `buf` (128 bytes, 8-byte aligned) is built
    // only to let CMSG_FIRSTHDR locate the first header; CMSG_SPACE(2) is far below 128, so
    // the header and its 2 data bytes fit.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return 0;
        }
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        space
    }
}
