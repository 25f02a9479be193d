//! Topic ids to names: newer Fetch, Produce, OffsetCommit and Metadata versions name topics by id only, while ACLs
//! and routes speak names. The data path learns the mapping from the Metadata responses it relays.

use std::collections::HashMap;

use kafka_protocol::messages::{MetadataResponse, TopicName};
use uuid::Uuid;

/// Looks up a topic's name by id.
pub trait TopicNames {
    fn topic_name(&self, id: Uuid) -> Option<TopicName>;
}

/// A map learned from Metadata responses.
#[derive(Clone, Debug, Default)]
pub struct TopicIds {
    names: HashMap<Uuid, TopicName>,
}

impl TopicIds {
    /// Records every named topic with an id in a Metadata response.
    pub fn learn(&mut self, response: &MetadataResponse) {
        for topic in &response.topics {
            if let Some(name) = &topic.name
                && !topic.topic_id.is_nil()
            {
                self.names.insert(topic.topic_id, name.clone());
            }
        }
    }

    pub fn insert(&mut self, id: Uuid, name: TopicName) {
        self.names.insert(id, name);
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl TopicNames for TopicIds {
    fn topic_name(&self, id: Uuid) -> Option<TopicName> {
        self.names.get(&id).cloned()
    }
}

/// For requests that never carry ids, or tests.
impl TopicNames for () {
    fn topic_name(&self, _id: Uuid) -> Option<TopicName> {
        None
    }
}
