//! The programs' maps as user space reads and writes them once they are loaded, and the programs' skipped
//! runs (`misses`), through one door: this process's own descriptors, or the privileged helper's.
//!
//! Before 5.19, while `kernel.unprivileged_bpf_disabled` is set, every bpf() command needs CAP_BPF, a map
//! lookup on a descriptor already open too (kernel/bpf/syscall.c `__sys_bpf`; commit c8644cd0efe7 in 5.19
//! narrowed the check to BPF_MAP_CREATE and BPF_PROG_LOAD). A tracer that gave up its capabilities then
//! asks the helper ([`go_through`]), which holds a clone of each map's descriptor and makes the same call
//! ([`RawMap::direct`]) for a request that names the map.
//!
//! The calls are made here, not through aya's map types: aya keeps its bpf() calls to itself (`aya::sys`
//! is the crate's own) and they take its `MapData`, which cannot cross a socket. The ring and perf buffers
//! stay aya's: consuming them reads memory shared with the kernel, with no bpf() call.

use std::{
    io,
    marker::PhantomData,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    sync::OnceLock,
};

use anyhow::{Context as _, bail};

/// One map operation, as the helper receives it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MapOp {
    Lookup {
        key: Vec<u8>,
    },
    Update {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Every key, in one answer, at most the map's `max_entries`.
    Keys,
}

/// The answer to a [`MapOp`]: a lookup's value (`None`: no such key), an update's or a removal's success,
/// the keys.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum MapReply {
    Value(Option<Vec<u8>>),
    Done,
    Keys(Vec<Vec<u8>>),
}

/// Where map calls go instead of bpf() in this process (the helper's client).
pub trait Remote: Send + Sync {
    fn map_call(&self, map: &str, op: MapOp) -> io::Result<MapReply>;
    /// The programs' skipped runs, summed (`Misses::total` in the helper).
    fn program_misses(&self) -> io::Result<u64>;
}

static REMOTE: OnceLock<Box<dyn Remote>> = OnceLock::new();

/// From now on every map call and every read of the skipped runs of this process goes to `remote`. Set
/// once: a later call leaves the first in place.
pub fn go_through(remote: Box<dyn Remote>) {
    let _ = REMOTE.set(remote);
}

/// Where this process's calls go, once [`go_through`] was called.
pub(crate) fn remote() -> Option<&'static dyn Remote> {
    REMOTE.get().map(Box::as_ref)
}

/// The bpf() commands (`enum bpf_cmd`, include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
pub(crate) const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The part of `union bpf_attr` that the element commands read (include/uapi/linux/bpf.h): the map, and the
/// addresses of the key and of the value (or, for `BPF_MAP_GET_NEXT_KEY`, of the next key).
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    /// `key` is `__aligned_u64`: the padding is spelled out so that the kernel reads zeros.
    _pad: u32,
    key: u64,
    value: u64,
    /// `BPF_ANY` (0) for an update: create the element or replace it.
    flags: u64,
}

/// bpf(2) `cmd` with `attr`, the part of `union bpf_attr` that `cmd` reads: the kernel reads its size only,
/// and takes what lies beyond as zeros (kernel/bpf/syscall.c `bpf_check_uarg_tail_zero`).
///
/// # Safety
///
/// The addresses `attr` holds name buffers that hold as many bytes as `cmd` reads or writes there.
pub(crate) unsafe fn bpf<A>(cmd: libc::c_long, attr: &mut A) -> io::Result<()> {
    // SAFETY: `attr` is `size_of::<A>()` bytes; what it points to is the caller's promise.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>() as libc::c_uint) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// How many CPUs a per-CPU value holds a slot for: the possible ones (`num_possible_cpus()` in
/// kernel/bpf/syscall.c `bpf_map_value_size`), read from sysfs once, when the first per-CPU map is taken:
/// before the tracer and the helper part, so that neither opens sysfs again.
fn possible_cpus() -> io::Result<usize> {
    static CPUS: OnceLock<usize> = OnceLock::new();
    if let Some(&cpus) = CPUS.get() {
        return Ok(cpus);
    }
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok(*CPUS.get_or_init(|| cpus))
}

/// A map of the programs, by its descriptor and its sizes as the kernel gave them.
#[derive(Debug)]
pub struct RawMap {
    name: &'static str,
    fd: OwnedFd,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    per_cpu: bool,
}

impl std::os::fd::AsRawFd for RawMap {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl RawMap {
    /// Takes the map `name` from the loaded object: an array or a hash map, per CPU or not.
    pub fn take(ebpf: &mut aya::Ebpf, name: &'static str) -> anyhow::Result<RawMap> {
        use aya::maps::Map;
        let map = ebpf.take_map(name).with_context(|| format!("the {name} map is missing"))?;
        let (data, per_cpu) = match &map {
            Map::Array(data) | Map::HashMap(data) => (data, false),
            Map::PerCpuArray(data) | Map::PerCpuHashMap(data) => (data, true),
            _ => bail!("the {name} map is neither an array nor a hash map"),
        };
        let info = data.info().with_context(|| format!("reading the {name} map's sizes"))?;
        if per_cpu {
            possible_cpus().context("counting the possible CPUs")?;
        }
        // aya's descriptor closes with `map`; this one stays open.
        let fd = data.fd().as_fd().try_clone_to_owned().with_context(|| format!("keeping the {name} map"))?;
        Ok(RawMap {
            name,
            fd,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            per_cpu,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The same map, by a descriptor of its own.
    pub fn try_clone(&self) -> io::Result<RawMap> {
        Ok(RawMap { fd: self.fd.try_clone()?, ..*self })
    }

    /// The call made with this process's own descriptor: what the helper runs for a request, and what
    /// every call runs when no [`Remote`] is set. A key or a value of another size than the map's is
    /// refused (`InvalidInput`) before the kernel reads it.
    pub fn direct(&self, op: MapOp) -> io::Result<MapReply> {
        match op {
            MapOp::Lookup { key } => {
                let mut value = vec![0; self.value_len()?];
                match self.elem(BPF_MAP_LOOKUP_ELEM, Some(&key), Some(&mut value)) {
                    Ok(()) => Ok(MapReply::Value(Some(value))),
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(MapReply::Value(None)),
                    Err(e) => Err(e),
                }
            }
            MapOp::Update { key, mut value } => {
                self.elem(BPF_MAP_UPDATE_ELEM, Some(&key), Some(&mut value))?;
                Ok(MapReply::Done)
            }
            MapOp::Delete { key } => {
                self.elem(BPF_MAP_DELETE_ELEM, Some(&key), None)?;
                Ok(MapReply::Done)
            }
            MapOp::Keys => Ok(MapReply::Keys(self.all_keys()?)),
        }
    }

    /// The bytes of a value as the kernel reads and writes it: for a per-CPU map, each possible CPU's in a
    /// slot of the value's size rounded up to 8 bytes (kernel/bpf/syscall.c `bpf_map_value_size`).
    fn value_len(&self) -> io::Result<usize> {
        let size = self.value_size as usize;
        Ok(if self.per_cpu { size.next_multiple_of(8) * possible_cpus()? } else { size })
    }

    /// An element command on `key` (none: the first key, for `BPF_MAP_GET_NEXT_KEY`) and `value` (the next
    /// key for `BPF_MAP_GET_NEXT_KEY`), each checked to be as long as the kernel will read or write.
    fn elem(&self, cmd: libc::c_long, key: Option<&[u8]>, value: Option<&mut [u8]>) -> io::Result<()> {
        let value_len = if cmd == BPF_MAP_GET_NEXT_KEY { self.key_size as usize } else { self.value_len()? };
        let check = |what: &str, len: usize, wanted: usize| {
            if len == wanted {
                return Ok(());
            }
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the {} map takes a {wanted}-byte {what}, not {len} bytes", self.name),
            ))
        };
        if let Some(key) = key {
            check("key", key.len(), self.key_size as usize)?;
        }
        let value = match value {
            Some(value) => {
                check("value", value.len(), value_len)?;
                value.as_mut_ptr() as u64
            }
            None => 0,
        };
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.map_or(0, |key| key.as_ptr() as u64),
            value,
            flags: 0,
        };
        // SAFETY: the key and the value are as long as the map's, checked above; the kernel reads the
        // key (and an update's value) and writes the value (or the next key) within them.
        unsafe { bpf(cmd, &mut attr) }
    }

    /// Every key of the map, at most `max_entries`: a key removed while they are listed sends the kernel
    /// back to the first one (kernel/bpf/hashtab.c `htab_map_get_next_key`), and the bound ends that.
    fn all_keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        while keys.len() < self.max_entries as usize {
            let mut next = vec![0; self.key_size as usize];
            match self.elem(BPF_MAP_GET_NEXT_KEY, keys.last().map(Vec::as_slice), Some(&mut next)) {
                Ok(()) => keys.push(next),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(keys)
    }

    /// `op`, made by the helper once this process goes through it, else with the own descriptor.
    fn call(&self, op: MapOp) -> io::Result<MapReply> {
        match remote() {
            Some(remote) => remote.map_call(self.name, op),
            None => self.direct(op),
        }
    }

    fn lookup(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        match self.call(MapOp::Lookup { key: key.to_vec() })? {
            MapReply::Value(value) => Ok(value),
            reply => Err(self.unexpected(&reply)),
        }
    }

    fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        match self.call(MapOp::Update { key: key.to_vec(), value: value.to_vec() })? {
            MapReply::Done => Ok(()),
            reply => Err(self.unexpected(&reply)),
        }
    }

    fn delete(&self, key: &[u8]) -> io::Result<()> {
        match self.call(MapOp::Delete { key: key.to_vec() })? {
            MapReply::Done => Ok(()),
            reply => Err(self.unexpected(&reply)),
        }
    }

    fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        match self.call(MapOp::Keys)? {
            MapReply::Keys(keys) => Ok(keys),
            reply => Err(self.unexpected(&reply)),
        }
    }

    fn unexpected(&self, reply: &MapReply) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("the {} map's call was answered {reply:?}", self.name))
    }

    /// Whether the map holds `K` keys and `V` values, per CPU or not, as a typed view of it reads them.
    fn holds<K, V>(&self, per_cpu: bool) -> anyhow::Result<()> {
        let (key, value) = (size_of::<K>(), size_of::<V>());
        if (self.key_size as usize, self.value_size as usize, self.per_cpu) != (key, value, per_cpu) {
            let each = |per_cpu| if per_cpu { " per CPU" } else { "" };
            bail!(
                "the {} map holds {}-byte keys and {}-byte values{}, not {key} and {value}{}",
                self.name,
                self.key_size,
                self.value_size,
                each(self.per_cpu),
                each(per_cpu)
            );
        }
        Ok(())
    }
}

/// A typed view of a [`RawMap`], its sizes checked when it is taken.
pub trait Typed: Sized {
    fn from_raw(raw: RawMap) -> anyhow::Result<Self>;
}

/// Takes the map `name` from the loaded object as `M`, and keeps a clone of it in `kept`: the maps the
/// helper answers for, by name.
pub fn take<M: Typed>(ebpf: &mut aya::Ebpf, name: &'static str, kept: &mut Vec<RawMap>) -> anyhow::Result<M> {
    let raw = RawMap::take(ebpf, name)?;
    let typed = M::from_raw(raw.try_clone().with_context(|| format!("keeping the {name} map"))?)?;
    kept.push(raw);
    Ok(typed)
}

/// The bytes of one of the programs' records, or of a key or a value.
pub fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: `T` is plain data (`aya::Pod`): every byte of it may be read.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// A `T` read from exactly its bytes.
fn from_bytes<T: aya::Pod>(bytes: &[u8]) -> io::Result<T> {
    if bytes.len() != size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes where {} were expected", bytes.len(), size_of::<T>()),
        ));
    }
    // SAFETY: `bytes` holds a whole `T`, and any bytes are a `T` (`aya::Pod`); the read copes with any
    // alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A per-CPU value as the kernel hands it over: each CPU's, in a slot of its size rounded up to 8 bytes
/// (kernel/bpf/arraymap.c `bpf_percpu_array_copy`, kernel/bpf/hashtab.c `bpf_percpu_hash_copy`).
fn per_cpu_values<V: aya::Pod>(bytes: &[u8]) -> io::Result<Vec<V>> {
    let slot = size_of::<V>().max(1).next_multiple_of(8);
    if !bytes.len().is_multiple_of(slot) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a per-CPU value of {} bytes is not a whole number of {slot}-byte slots", bytes.len()),
        ));
    }
    bytes.chunks(slot).map(|value| from_bytes(&value[..size_of::<V>()])).collect()
}

fn missing(map: &RawMap) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such element in the {} map", map.name))
}

/// An array of `V`, indexed from 0.
pub struct Array<V> {
    raw: RawMap,
    value: PhantomData<V>,
}

impl<V: aya::Pod> Typed for Array<V> {
    fn from_raw(raw: RawMap) -> anyhow::Result<Self> {
        raw.holds::<u32, V>(false)?;
        Ok(Self { raw, value: PhantomData })
    }
}

impl<V: aya::Pod> Array<V> {
    pub fn set(&self, index: u32, value: V) -> io::Result<()> {
        self.raw.update(&index.to_ne_bytes(), bytes_of(&value))
    }
}

/// An array of a `V` per CPU.
pub struct PerCpuArray<V> {
    raw: RawMap,
    value: PhantomData<V>,
}

impl<V: aya::Pod> Typed for PerCpuArray<V> {
    fn from_raw(raw: RawMap) -> anyhow::Result<Self> {
        raw.holds::<u32, V>(true)?;
        Ok(Self { raw, value: PhantomData })
    }
}

impl<V: aya::Pod> PerCpuArray<V> {
    /// Every possible CPU's value at `index`.
    pub fn get(&self, index: u32) -> io::Result<Vec<V>> {
        per_cpu_values(&self.raw.lookup(&index.to_ne_bytes())?.ok_or_else(|| missing(&self.raw))?)
    }
}

/// A hash map of `K` to `V`.
pub struct HashMap<K, V> {
    raw: RawMap,
    types: PhantomData<(K, V)>,
}

impl<K: aya::Pod, V: aya::Pod> Typed for HashMap<K, V> {
    fn from_raw(raw: RawMap) -> anyhow::Result<Self> {
        raw.holds::<K, V>(false)?;
        Ok(Self { raw, types: PhantomData })
    }
}

impl<K: aya::Pod, V: aya::Pod> HashMap<K, V> {
    /// The value of `key`, `None` where there is none.
    pub fn get(&self, key: &K) -> io::Result<Option<V>> {
        self.raw.lookup(bytes_of(key))?.map(|value| from_bytes(&value)).transpose()
    }
}

/// A hash map of `K` to a `V` per CPU.
pub struct PerCpuHashMap<K, V> {
    raw: RawMap,
    types: PhantomData<(K, V)>,
}

impl<K: aya::Pod, V: aya::Pod> Typed for PerCpuHashMap<K, V> {
    fn from_raw(raw: RawMap) -> anyhow::Result<Self> {
        raw.holds::<K, V>(true)?;
        Ok(Self { raw, types: PhantomData })
    }
}

impl<K: aya::Pod, V: aya::Pod> PerCpuHashMap<K, V> {
    /// Every key, in one call.
    pub fn keys(&self) -> io::Result<Vec<K>> {
        self.raw.keys()?.iter().map(|key| from_bytes(key)).collect()
    }

    /// Every possible CPU's value of `key`; an error where there is none.
    pub fn get(&self, key: &K) -> io::Result<Vec<V>> {
        per_cpu_values(&self.raw.lookup(bytes_of(key))?.ok_or_else(|| missing(&self.raw))?)
    }

    pub fn remove(&self, key: &K) -> io::Result<()> {
        self.raw.delete(bytes_of(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map of the given sizes whose descriptor is no map's: the calls refused before bpf() never reach it.
    fn unloaded(key_size: u32, value_size: u32, per_cpu: bool) -> RawMap {
        let fd = std::fs::File::open("/dev/null").expect("/dev/null").into();
        RawMap { name: "TEST", fd, key_size, value_size, max_entries: 4, per_cpu }
    }

    fn refused(reply: io::Result<MapReply>) -> String {
        let e = reply.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert_eq!(e.raw_os_error(), None, "refused by the kernel, not before: {e}");
        e.to_string()
    }

    /// A key or a value of another size than the map's never reaches the kernel, which would read or write
    /// the map's sizes from the addresses given.
    #[test]
    fn direct_refuses_a_key_or_a_value_of_another_size() {
        let map = unloaded(4, 12, false);
        let e = refused(map.direct(MapOp::Lookup { key: vec![0; 8] }));
        assert_eq!(e, "the TEST map takes a 4-byte key, not 8 bytes");
        refused(map.direct(MapOp::Delete { key: vec![] }));
        refused(map.direct(MapOp::Update { key: vec![0; 3], value: vec![0; 12] }));
        let e = refused(map.direct(MapOp::Update { key: vec![0; 4], value: vec![0; 16] }));
        assert_eq!(e, "the TEST map takes a 12-byte value, not 16 bytes");
    }

    /// A per-CPU map's value holds a slot rounded up to 8 bytes for every possible CPU.
    #[test]
    fn direct_takes_a_per_cpu_value_for_every_possible_cpu() {
        let cpus = possible_cpus().expect("the possible CPUs");
        let map = unloaded(4, 12, true);
        assert_eq!(map.value_len().unwrap(), 16 * cpus);
        refused(map.direct(MapOp::Update { key: vec![0; 4], value: vec![0; 12 * cpus] }));
        refused(map.direct(MapOp::Update { key: vec![0; 4], value: vec![0; 16 * cpus + 16] }));
        // Of the right sizes, the call reaches the kernel, which finds no map behind /dev/null (EINVAL,
        // kernel/bpf/syscall.c `__bpf_map_get`; EPERM without the right to call it).
        let e = map.direct(MapOp::Update { key: vec![0; 4], value: vec![0; 16 * cpus] }).expect_err("no map");
        assert!(e.raw_os_error().is_some(), "{e}");
    }

    #[test]
    fn a_per_cpu_value_is_split_into_its_slots() {
        // Twelve bytes: each CPU's takes a slot of 16.
        let bytes: Vec<u8> = (0..3u32).flat_map(|cpu| [cpu + 1, cpu * 10, 7, 0]).flat_map(u32::to_ne_bytes).collect();
        let values: Vec<[u32; 3]> = per_cpu_values(&bytes).unwrap();
        assert_eq!(values, [[1, 0, 7], [2, 10, 7], [3, 20, 7]]);
        // A u32 takes a slot of 8 bytes.
        let bytes: Vec<u8> = [7u32, 0, 9, 0].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(per_cpu_values::<u32>(&bytes).unwrap(), [7, 9]);
        assert_eq!(per_cpu_values::<u32>(&bytes[..12]).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    /// A map of the kernel's, created for the test (`BPF_MAP_CREATE`); `None` where it may not be.
    fn created(map_type: u32, key_size: u32, value_size: u32, per_cpu: bool) -> Option<RawMap> {
        /// The part of `union bpf_attr` that `BPF_MAP_CREATE` reads first.
        #[repr(C)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        let mut attr = CreateAttr { map_type, key_size, value_size, max_entries: 4, map_flags: 0 };
        // SAFETY: the attribute holds no address.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, &mut attr as *mut CreateAttr, size_of::<CreateAttr>()) };
        if fd < 0 {
            println!("skipped: BPF_MAP_CREATE: {}", io::Error::last_os_error());
            return None;
        }
        // SAFETY: the kernel just opened it for this process alone.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        Some(RawMap { name: "TEST", fd, key_size, value_size, max_entries: 4, per_cpu })
    }

    /// The calls as the kernel answers them: the attribute's layout is the kernel's.
    #[test]
    fn the_calls_reach_a_map_of_the_kernel() {
        // BPF_MAP_TYPE_HASH (include/uapi/linux/bpf.h `enum bpf_map_type`).
        let Some(raw) = created(1, 4, 8, false) else { return };
        let map = HashMap::<u32, u64>::from_raw(raw.try_clone().unwrap()).unwrap();
        for key in [3u32, 5, 8] {
            raw.update(&key.to_ne_bytes(), &u64::from(key * 100).to_ne_bytes()).unwrap();
        }
        let mut keys: Vec<u32> = raw.keys().unwrap().iter().map(|k| from_bytes(k).unwrap()).collect();
        keys.sort();
        assert_eq!(keys, [3, 5, 8]);
        assert_eq!(map.get(&5).unwrap(), Some(500));
        raw.delete(&5u32.to_ne_bytes()).unwrap();
        assert_eq!(map.get(&5).unwrap(), None);
        assert!(raw.delete(&5u32.to_ne_bytes()).is_err());
        assert!(PerCpuHashMap::<u32, u64>::from_raw(raw).is_err(), "a hash map is not per CPU");

        // BPF_MAP_TYPE_PERCPU_ARRAY.
        let Some(raw) = created(6, 4, 4, true) else { return };
        let cpus = possible_cpus().unwrap();
        let values: Vec<u8> = (0..cpus as u32).flat_map(|cpu| [cpu, 0]).flat_map(u32::to_ne_bytes).collect();
        raw.update(&1u32.to_ne_bytes(), &values).unwrap();
        let map = PerCpuArray::<u32>::from_raw(raw).unwrap();
        assert_eq!(map.get(1).unwrap(), (0..cpus as u32).collect::<Vec<_>>());
        assert_eq!(map.get(0).unwrap(), vec![0; cpus]);
        assert_eq!(map.get(4).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
