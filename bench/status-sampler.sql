-- Lists every active device.status statement (the UNION ALL) about every 4 ms, with its age and wait event, as
-- NOTICEs, for about three minutes: docs/performance.md, "Status reads under load". Run it beside a three-replica
-- bench phase, on the bench's PostgreSQL (its port is in `ps`: postgres -D … -p PORT; the superuser is certrot):
--   psql -h 127.0.0.1 -p PORT -U certrot -q -f bench/status-sampler.sql postgres 2> sightings.txt
DO $$ DECLARE r record; BEGIN
FOR i IN 1..40000 LOOP
  PERFORM pg_stat_clear_snapshot();
  FOR r IN SELECT pid, state, wait_event_type, wait_event, round(1000*extract(epoch from clock_timestamp()-query_start)) AS ms, round(1000*extract(epoch from clock_timestamp()-state_change)) AS sc
           FROM pg_stat_activity WHERE query LIKE '%UNION ALL%' AND pid <> pg_backend_pid() AND state = 'active' LOOP
    RAISE NOTICE 'S % % % % % % %', to_char(clock_timestamp(),'HH24:MI:SS.MS'), r.pid, r.state, r.wait_event_type, r.wait_event, r.ms, r.sc;
  END LOOP;
  PERFORM pg_sleep(0.004);
END LOOP; END $$;
