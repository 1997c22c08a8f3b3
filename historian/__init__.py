"""The plant historian: every line's decisions from MQTT into one PostgreSQL, exactly once per part.

Modules by concern: ``config`` (the YAML file, pydantic), ``records`` (MQTT messages -> typed rows),
``migrate`` + ``migrations/*.sql`` (the schema, plain versioned SQL), ``store`` (PostgreSQL: batches,
partitions, gaps, queries), ``consumer`` (MQTT 5 shared subscription, ack after commit), ``replay`` (a
daemon's ``/events`` replay for seq gaps), ``evidence`` (the reference per row, optional S3 copy),
``cli`` (``boxinspect historian``). No TensorFlow, no daemon code beyond the MQTT client factory.
"""
