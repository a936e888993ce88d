//! The `DispatchQueue` contract (`sendme_actors::ports::contract::queue`) on the
//! in-process queue. The Kafka queue runs the same contract in
//! `backends/kafka/tests/queue_contract.rs`.

mod in_process_queue {
    use sendme_actors::embedded::InProcessQueue;
    use sendme_actors::ports::contract::queue::{Consumer, Join};
    use std::sync::Arc;

    fn in_process() -> Join {
        let queue = Arc::new(InProcessQueue::new(8));
        Box::new(move || {
            let consumer: Consumer = Arc::new(queue.consumer());
            Box::pin(async move { consumer })
        })
    }

    sendme_actors::queue_contract_tests!(in_process());
}
