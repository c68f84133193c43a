//! `lost`: events the kernel could not hand over (its buffer full), or ran no program for
//! (`kernel::misses`), since the last report.

use std::time::SystemTime;

use serde::Serialize;

use super::{
    Facts, Kind, Line, Metric, Row, Sample, Tone,
    parts::{Head, to_json},
};
use crate::domain::{Dns, Pod, Translation, rfc3339};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    pub time: SystemTime,
    pub count: u64,
}

pub static METRIC: Metric = Metric {
    name: "lost_events",
    help: "Events the kernel could not hand over to udptrace (buffer full) or ran no program for: the counters above \
           miss them",
    labelled: false,
};

/// The JSON object: no namespace or mode, which belong to no one event.
#[derive(Serialize)]
struct Json {
    #[serde(flatten)]
    head: Head<'static>,
    count: u64,
}

impl Kind for Lost {
    fn name(&self) -> &'static str {
        "lost"
    }

    /// Lost events stand for none that were seen.
    fn count(&self) -> u64 {
        0
    }

    fn dns(&self) -> Option<&Dns> {
        None
    }

    fn conntrack(&self) -> Option<&Translation> {
        None
    }

    fn pod(&self) -> Option<&Pod> {
        None
    }

    /// No filter can tell whose they were: every one passes them.
    fn facts(&self) -> Option<Facts<'_>> {
        None
    }

    fn json(&self) -> serde_json::Value {
        let head = Head { event: self.name(), time: rfc3339(self.time), netns: None, probe: None, pod: None };
        to_json(&Json { head, count: self.count })
    }

    fn line(&self) -> Line {
        Line {
            time: self.time,
            tone: Tone::Lost,
            what: "lost".to_owned(),
            why: format!("{} events", self.count),
            flow: None,
            details: Vec::new(),
            netns: None,
            sentence: "the kernel could not hand them over: the buffer was full; see the closing counts".to_owned(),
        }
    }

    /// Counted apart, in a table's heading.
    fn row(&self) -> Option<Row> {
        None
    }

    /// No record decodes as lost events: they are counted, not handed over.
    fn check_record(&self, _record: &[u8]) {
        panic!("no record decodes as {self:?}");
    }

    fn sample(&self) -> Sample {
        Sample { metric: &METRIC, count: self.count, labels: Vec::new(), address: None, outcome: String::new() }
    }
}
