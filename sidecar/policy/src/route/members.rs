//! Consumer groups across a route switch.
//!
//! A group's coordinator lives in the cluster its route uses now. A group request reaching another cluster (a
//! member still talking to the coordinator it found before the switch) is answered NOT_COORDINATOR, so the client
//! looks its coordinator up again and FindCoordinator follows the route.
//!
//! A KIP-848 member epoch means something only to the cluster that granted it: the member ids are the client's
//! own, so both clusters know the same member, and their epochs are small counters that easily coincide. A
//! heartbeat or commit carrying an epoch another cluster granted would be taken as current there, with the other
//! cluster's assignment and offsets. [`Epochs`] remembers which cluster granted each member's epoch; a heartbeat
//! or commit carrying it to another cluster is answered FENCED_MEMBER_EPOCH, as a coordinator answers an epoch it
//! did not grant: the member gives its partitions up without committing and rejoins with epoch 0, taking its
//! positions from this cluster's committed offsets, and the commit is not written. (STALE_MEMBER_EPOCH would not
//! do for the commit: the Java client retries it with the epoch it rejoins with, writing the positions it had in
//! the other cluster.) The sidecar sends such a heartbeat on as the member's leave (epoch -1) before it answers:
//! the cluster may still hold the member from before the route left it, at an epoch above 0, and would fence the
//! rejoin until that old session expired.

use std::collections::HashMap;

use kafka_protocol::ResponseError as E;
use kafka_protocol::messages::{ConsumerGroupHeartbeatResponse, RequestKind};

use super::{Health, Kind, Routes};

pub const NOT_COORDINATOR: i16 = E::NotCoordinator.code();
pub const FENCED_MEMBER_EPOCH: i16 = E::FencedMemberEpoch.code();

/// The one group a request for a group coordinator is about (an OffsetFetch naming several groups: none).
pub fn group(request: &RequestKind) -> Option<&str> {
    use RequestKind as K;
    let name = match request {
        K::JoinGroup(r) => &r.group_id,
        K::SyncGroup(r) => &r.group_id,
        K::Heartbeat(r) => &r.group_id,
        K::LeaveGroup(r) => &r.group_id,
        K::OffsetCommit(r) => &r.group_id,
        K::OffsetDelete(r) => &r.group_id,
        K::ConsumerGroupHeartbeat(r) => &r.group_id,
        K::OffsetFetch(r) if r.groups.is_empty() => &r.group_id,
        K::OffsetFetch(r) if r.groups.len() == 1 => &r.groups[0].group_id,
        _ => return None,
    };
    Some(name.as_str())
}

/// Whether a group request reached `own` while the group's route uses another cluster.
pub fn misdirected(request: &RequestKind, routes: &Routes, health: &Health, own: &str) -> bool {
    group(request).is_some_and(|g| routes.cluster(Kind::Group, g, health) != own)
}

/// One KIP-848 member: (group, member id).
type Member = (String, String);

/// Which cluster granted each KIP-848 member its current epoch. Bounded: past `capacity` members the one heard
/// from longest ago is forgotten (it is then forwarded as before, and its cluster's coordinator judges it).
#[derive(Debug)]
pub struct Epochs {
    granted: HashMap<Member, (String, u64)>,
    /// Counts answers learnt, to find the member heard from longest ago.
    clock: u64,
    capacity: usize,
}

impl Default for Epochs {
    fn default() -> Self {
        Epochs::with_capacity(10_000)
    }
}

impl Epochs {
    pub fn with_capacity(capacity: usize) -> Self {
        Epochs { granted: HashMap::new(), clock: 0, capacity: capacity.max(1) }
    }

    /// The cluster that granted `member` of `group` its epoch, if known.
    pub fn origin(&self, group: &str, member: &str) -> Option<&str> {
        self.granted.get(&(group.to_string(), member.to_string())).map(|(c, _)| c.as_str())
    }

    pub fn len(&self) -> usize {
        self.granted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.granted.is_empty()
    }

    /// Learns from `cluster`'s answer to a heartbeat of `member` (the request's member id; the answer's wins when
    /// it names one): an epoch granted, or the member gone (a negative epoch: it left).
    pub fn learn(&mut self, group: &str, member: &str, answer: &ConsumerGroupHeartbeatResponse, cluster: &str) {
        if answer.error_code != 0 {
            return;
        }
        let member = answer.member_id.as_ref().map(|m| m.as_str()).filter(|m| !m.is_empty()).unwrap_or(member);
        let key = (group.to_string(), member.to_string());
        if answer.member_epoch < 0 {
            self.granted.remove(&key);
            return;
        }
        if answer.member_epoch == 0 {
            return;
        }
        self.clock += 1;
        if !self.granted.contains_key(&key) && self.granted.len() >= self.capacity {
            let oldest = self.granted.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.granted.remove(&oldest);
            }
        }
        self.granted.insert(key, (cluster.to_string(), self.clock));
    }

    /// The error code (FENCED_MEMBER_EPOCH) and message for a heartbeat or commit carrying a member epoch another
    /// cluster than `own` granted; `None` to forward it.
    pub fn foreign(&self, request: &RequestKind, own: &str) -> Option<(i16, String)> {
        let (group, member, epoch) = match request {
            RequestKind::ConsumerGroupHeartbeat(r) => (r.group_id.as_str(), r.member_id.as_str(), r.member_epoch),
            RequestKind::OffsetCommit(r) => {
                (r.group_id.as_str(), r.member_id.as_str(), r.generation_id_or_member_epoch)
            }
            _ => return None,
        };
        if epoch <= 0 || member.is_empty() {
            return None;
        }
        let origin = self.origin(group, member).filter(|c| *c != own)?;
        Some((
            FENCED_MEMBER_EPOCH,
            format!("member epoch {epoch} was granted by cluster {origin:?}, not {own:?}: rejoin"),
        ))
    }
}

/// Classic member ids, each with the cluster that gave it and when it was last heard of.
type MemberIds = HashMap<String, (String, u64)>;

/// The classic-protocol members this sidecar's clients hold, by the member ids the coordinators gave them. A
/// classic member gets its id from the coordinator, so after a route switch it joins the other cluster under a new
/// one; the cluster the route left still lists the old member, and when the route returns there its rebalance
/// waits for that member until its session times out. The members a cluster gave before another cluster gave one
/// of the same group are stale there: the sidecar sends their leave before the group's next join reaches it.
/// Bounded: past `capacity` members the one heard from longest ago is forgotten (it then times out as before).
#[derive(Debug)]
pub struct Classic {
    /// Per group: the cluster that gave the latest member id, and each member id with its cluster and age.
    groups: HashMap<String, (String, MemberIds)>,
    members: usize,
    clock: u64,
    capacity: usize,
}

impl Default for Classic {
    fn default() -> Self {
        Classic::with_capacity(10_000)
    }
}

impl Classic {
    pub fn with_capacity(capacity: usize) -> Self {
        Classic { groups: HashMap::new(), members: 0, clock: 0, capacity: capacity.max(1) }
    }

    pub fn len(&self) -> usize {
        self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// `cluster` gave a member of `group` the id `member` (a JoinGroup answered without error).
    pub fn joined(&mut self, group: &str, member: &str, cluster: &str) {
        if member.is_empty() {
            return;
        }
        self.clock += 1;
        let known = self.groups.get(group).is_some_and(|(_, m)| m.contains_key(member));
        if !known && self.members >= self.capacity {
            self.forget_oldest();
        }
        let (latest, members) = self.groups.entry(group.to_string()).or_default();
        *latest = cluster.to_string();
        if members.insert(member.to_string(), (cluster.to_string(), self.clock)).is_none() {
            self.members += 1;
        }
    }

    /// `member` left `group` (a LeaveGroup went through).
    pub fn left(&mut self, group: &str, member: &str) {
        if let Some((_, members)) = self.groups.get_mut(group)
            && members.remove(member).is_some()
        {
            self.members -= 1;
            self.drop_if_empty(group);
        }
    }

    /// Forgets a group none of whose members is listed: with no member to leave anywhere, which cluster gave the
    /// latest id no longer matters, and the table stays bounded by its members, not by every group ever joined.
    fn drop_if_empty(&mut self, group: &str) {
        if self.groups.get(group).is_some_and(|(_, members)| members.is_empty()) {
            self.groups.remove(group);
        }
    }

    /// The members of `group` that `cluster` gave ids to before another cluster gave the latest one, forgotten as
    /// they are returned: their leave is about to be sent to `cluster`.
    pub fn take_stale(&mut self, group: &str, cluster: &str) -> Vec<String> {
        let Some((latest, members)) = self.groups.get_mut(group) else { return Vec::new() };
        if latest == cluster {
            return Vec::new();
        }
        let stale: Vec<String> = members.iter().filter(|(_, (c, _))| c == cluster).map(|(m, _)| m.clone()).collect();
        for m in &stale {
            members.remove(m);
        }
        self.members -= stale.len();
        self.drop_if_empty(group);
        stale
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .groups
            .iter()
            .flat_map(|(g, (_, members))| members.iter().map(move |(m, (_, at))| (*at, g, m)))
            .min()
            .map(|(_, g, m)| (g.clone(), m.clone()));
        if let Some((group, member)) = oldest {
            self.left(&group, &member);
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::{
        ConsumerGroupHeartbeatRequest, GroupId, HeartbeatRequest, OffsetCommitRequest, OffsetFetchRequest,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    fn heartbeat(group: &str, member: &str, epoch: i32) -> RequestKind {
        let r = ConsumerGroupHeartbeatRequest::default().with_group_id(GroupId(s(group))).with_member_id(s(member));
        RequestKind::ConsumerGroupHeartbeat(r.with_member_epoch(epoch))
    }

    fn commit(group: &str, member: &str, epoch: i32) -> RequestKind {
        let r = OffsetCommitRequest::default().with_group_id(GroupId(s(group))).with_member_id(s(member));
        RequestKind::OffsetCommit(r.with_generation_id_or_member_epoch(epoch))
    }

    fn granted(member: Option<&str>, epoch: i32) -> ConsumerGroupHeartbeatResponse {
        ConsumerGroupHeartbeatResponse::default().with_member_id(member.map(s)).with_member_epoch(epoch)
    }

    #[test]
    fn an_epoch_granted_by_one_cluster_is_fenced_in_the_other_and_a_rejoin_goes_through() {
        let mut epochs = Epochs::default();
        epochs.learn("g", "m1", &granted(Some("m1"), 3), "east");
        assert_eq!(epochs.foreign(&heartbeat("g", "m1", 3), "east"), None, "the granting cluster's own epoch");
        let (code, message) = epochs.foreign(&heartbeat("g", "m1", 3), "west").unwrap();
        assert_eq!(code, FENCED_MEMBER_EPOCH);
        assert!(message.contains("\"east\""), "{message}");
        assert_eq!(epochs.foreign(&commit("g", "m1", 3), "west").map(|(c, _)| c), Some(FENCED_MEMBER_EPOCH));
        // Joining (epoch 0) and leaving (negative) are not fenced; other members and groups are not known.
        assert_eq!(epochs.foreign(&heartbeat("g", "m1", 0), "west"), None);
        assert_eq!(epochs.foreign(&heartbeat("g", "m1", -1), "west"), None);
        assert_eq!(epochs.foreign(&heartbeat("g", "m2", 3), "west"), None);
        assert_eq!(epochs.foreign(&heartbeat("other", "m1", 3), "west"), None);
        // West grants an epoch after the rejoin: now east's would be foreign.
        epochs.learn("g", "m1", &granted(None, 1), "west");
        assert_eq!(epochs.foreign(&heartbeat("g", "m1", 1), "west"), None);
        assert_eq!(epochs.foreign(&commit("g", "m1", 1), "east").map(|(c, _)| c), Some(FENCED_MEMBER_EPOCH));
    }

    #[test]
    fn errors_and_joins_teach_nothing_and_a_member_that_left_is_forgotten() {
        let mut epochs = Epochs::default();
        epochs.learn("g", "m1", &granted(Some("m1"), 5).with_error_code(FENCED_MEMBER_EPOCH), "east");
        epochs.learn("g", "m1", &granted(Some("m1"), 0), "east");
        assert!(epochs.is_empty());
        epochs.learn("g", "m1", &granted(Some("m1"), 5), "east");
        epochs.learn("g", "m1", &granted(Some("m1"), -1), "east");
        assert_eq!(epochs.origin("g", "m1"), None);
        // A server-assigned member id (older clients send none) is the one remembered.
        epochs.learn("g", "", &granted(Some("assigned"), 2), "east");
        assert_eq!(epochs.origin("g", "assigned"), Some("east"));
    }

    #[test]
    fn past_its_capacity_the_member_heard_from_longest_ago_is_forgotten() {
        let mut epochs = Epochs::with_capacity(2);
        epochs.learn("g", "a", &granted(None, 1), "east");
        epochs.learn("g", "b", &granted(None, 1), "east");
        epochs.learn("g", "a", &granted(None, 2), "east");
        epochs.learn("g", "c", &granted(None, 1), "west");
        assert_eq!(epochs.len(), 2);
        assert_eq!((epochs.origin("g", "a"), epochs.origin("g", "b")), (Some("east"), None));
        assert_eq!(epochs.origin("g", "c"), Some("west"));
    }

    #[test]
    fn classic_members_a_cluster_gave_before_another_gave_one_are_stale_there() {
        let mut classic = Classic::default();
        classic.joined("g", "e1", "east");
        classic.joined("g", "e2", "east");
        classic.joined("other", "o1", "east");
        assert!(classic.take_stale("g", "east").is_empty(), "east gave the latest id: nothing stale there");
        // The route moved to west: one member joined there.
        classic.joined("g", "w1", "west");
        assert!(classic.take_stale("g", "west").is_empty());
        let mut stale = classic.take_stale("g", "east");
        stale.sort();
        assert_eq!(stale, ["e1", "e2"]);
        assert!(classic.take_stale("g", "east").is_empty(), "each leave is sent once");
        assert!(classic.take_stale("other", "west").is_empty(), "other groups are untouched");
        // A member that left is not left again.
        classic.joined("g", "e3", "east");
        classic.left("g", "e3");
        classic.joined("g", "w2", "west");
        assert!(classic.take_stale("g", "east").is_empty());
        assert_eq!(classic.len(), 3, "w1, w2 and o1");
        // A group whose members are all gone is forgotten with them.
        classic.left("other", "o1");
        assert!(!classic.groups.contains_key("other"));
    }

    #[test]
    fn past_its_capacity_the_classic_member_heard_from_longest_ago_is_forgotten() {
        let mut classic = Classic::with_capacity(2);
        classic.joined("g", "a", "east");
        classic.joined("g", "b", "east");
        classic.joined("g", "a", "east");
        classic.joined("g", "c", "west");
        assert_eq!(classic.len(), 2);
        assert_eq!(classic.take_stale("g", "east"), ["a"]);
    }

    #[test]
    fn a_group_request_reaching_a_cluster_its_route_left_is_misdirected() {
        let config = kproxy_api::config::SidecarConfig::parse(
            "clusters:\n- {name: east, bootstrapServers: [\"e:1\"]}\n- {name: west, bootstrapServers: [\"w:1\"]}\n\
             routes:\n- {match: {groupPrefix: \"orders-\"}, cluster: east, failover: [west]}\n",
        )
        .unwrap();
        let routes = Routes::compile(&config);
        let mut health = Health::new(std::time::Duration::from_secs(1));
        let beat = |group: &str| {
            RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(GroupId(s(group))).with_member_id(s("m")))
        };
        assert!(!misdirected(&beat("orders-1"), &routes, &health, "east"));
        assert!(misdirected(&beat("orders-1"), &routes, &health, "west"));
        assert!(misdirected(&heartbeat("orders-1", "m", 3), &routes, &health, "west"));
        let now = std::time::Instant::now();
        health.failure_since("east", now - std::time::Duration::from_secs(2), now);
        assert!(misdirected(&commit("orders-1", "m", 3), &routes, &health, "east"), "the route moved to west");
        assert!(!misdirected(&commit("orders-1", "m", 3), &routes, &health, "west"));
        // An OffsetFetch of several groups names no one coordinator.
        let fetch = OffsetFetchRequest::default().with_groups(vec![Default::default(), Default::default()]);
        assert!(!misdirected(&RequestKind::OffsetFetch(fetch), &routes, &health, "west"));
    }
}
